-- ragops.util.safe_file: the one way ragops writes an output file (the
-- --report-json and --report-html reports, the metrics textfile). The target
-- must be a regular file or absent: a symbolic link, device, FIFO, socket or
-- directory is refused (a link planted where the report goes must not make
-- ragops write where it points; /dev/full must not become a regular file).
-- The text goes to a new temporary created with O_EXCL in the target's
-- directory (mkostemp: an unpredictable name, never opened through a planted
-- link), is written whole, fsync'ed and renamed over the target; the
-- directory is fsync'ed after the rename (best effort). Every failure
-- removes the temporary and returns nil, pt-BR reason, kind ("not_regular"
-- or "io"). The new file keeps the mode of the one it replaces (0666 minus
-- the umask when there was none). Lua's io cannot open with O_EXCL, so this
-- goes through LuaJIT's FFI to libc: the same code in the binary and in busted.
local bit = require "bit"
local ffi = require "ffi"

local M = {}

-- struct statx has one layout on every architecture (unlike struct stat).
if not pcall(ffi.typeof, "struct ragops_statx") then
  ffi.cdef [[
    struct ragops_statx_timestamp { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
    struct ragops_statx {
      uint32_t stx_mask; uint32_t stx_blksize; uint64_t stx_attributes;
      uint32_t stx_nlink; uint32_t stx_uid; uint32_t stx_gid; uint16_t stx_mode; uint16_t spare0;
      uint64_t stx_ino; uint64_t stx_size; uint64_t stx_blocks; uint64_t stx_attributes_mask;
      struct ragops_statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
      uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
      uint64_t spare2[14];
    };
    int statx(int dirfd, const char *path, int flags, unsigned int mask, struct ragops_statx *buf);
    int mkostemp(char *template, int flags);
    long write(int fd, const void *buf, size_t count);
    int open(const char *path, int flags, ...);
    int fsync(int fd);
    int close(int fd);
    int fchmod(int fd, unsigned int mode);
    int rename(const char *from, const char *to);
    int unlink(const char *path);
    unsigned int umask(unsigned int mask);
    char *strerror(int errnum);
  ]]
end

local C = ffi.C
local AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
local STATX_TYPE_MODE = 0x3
local S_IFMT, S_IFREG, S_IFLNK = 0xF000, 0x8000, 0xA000
local O_RDONLY, O_CLOEXEC = 0, 0x80000
local ENOENT, EINTR = 2, 4

-- pt-BR names of the errors a write may meet (strerror is English).
local ERRNO_PTBR = {
  [1] = "operação não permitida", [2] = "arquivo ou pasta não encontrado", [5] = "erro de entrada e saída",
  [13] = "permissão negada", [17] = "o arquivo já existe", [18] = "destino em outro sistema de arquivos",
  [20] = "parte do caminho não é uma pasta", [21] = "é uma pasta", [24] = "arquivos abertos demais",
  [27] = "arquivo grande demais", [28] = "sem espaço no dispositivo", [30] = "sistema de arquivos somente leitura",
  [36] = "nome de arquivo longo demais", [40] = "links simbólicos demais no caminho", [122] = "cota de disco excedida",
}

-- pt-BR text of the last FFI call's errno, with the system's own in parentheses.
local function system_error()
  local errno = ffi.errno()
  local original = ffi.string(C.strerror(errno))
  return ("%s (%s)"):format(ERRNO_PTBR[errno] or "erro do sistema", original), errno
end

-- Kind of what is at path: "absent", "regular" (with its mode), "link",
-- "other", or nil, pt-BR reason.
local function inspect(path)
  local st = ffi.new("struct ragops_statx")
  if C.statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE_MODE, st) ~= 0 then
    local reason, errno = system_error()
    if errno == ENOENT then return "absent" end
    return nil, reason
  end
  local format = bit.band(st.stx_mode, S_IFMT)
  if format == S_IFREG then return "regular", bit.band(st.stx_mode, 0xFFF) end
  return format == S_IFLNK and "link" or "other"
end

-- The directory of path and the temporary's template in it.
local function temporary_template(path)
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", path end
  if dir == "" then dir = "/" end
  return dir, ("%s/.%s.XXXXXX"):format(dir == "/" and "" or dir, base)
end

-- Writes all of text to fd; returns true or nil, reason.
local function write_all(fd, text)
  local offset, size = 0, #text
  local data = ffi.cast("const char *", text)
  while offset < size do
    local n = tonumber(C.write(fd, data + offset, size - offset))
    if n < 0 then
      local reason, errno = system_error()
      if errno ~= EINTR then return nil, reason end
    else
      offset = offset + n
    end
  end
  return true
end

-- Fills the temporary fd with text at mode; returns true or nil, reason.
local function fill(fd, text, mode)
  if C.fchmod(fd, mode) ~= 0 then return nil, "falha ao ajustar as permissões: " .. system_error() end
  local ok, werr = write_all(fd, text)
  if not ok then return nil, "falha ao gravar: " .. werr end
  if C.fsync(fd) ~= 0 then return nil, "falha ao descarregar no disco (fsync): " .. system_error() end
  return true
end

local function sync_directory(dir)
  local fd = C.open(dir, bit.bor(O_RDONLY, O_CLOEXEC))
  if fd >= 0 then
    C.fsync(fd)
    C.close(fd)
  end
end

-- The refusal of a target that is not a regular file (what: inspect's
-- kind), or nil when it may be replaced.
local function refusal(what)
  if what == "link" then
    return "o destino é um link simbólico; por segurança, só arquivos comuns são substituídos "
      .. "(indique o caminho do arquivo real)"
  elseif what == "other" then
    return "o destino não é um arquivo comum (pasta, dispositivo, FIFO ou socket)"
  end
end

-- Whether M.write(path, ...) could replace path, without touching it: the
-- target is a regular file or absent, and its directory takes a new file (a
-- temporary created with O_EXCL, never through a planted link, and removed
-- at once). For checks before a run starts. Returns true or nil, pt-BR
-- reason, kind.
function M.check_writable(path)
  if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
    error("safe_file.check_writable: caminho deve ser um texto não vazio", 2)
  end
  local what, mode = inspect(path)
  if not what then return nil, "não foi possível examinar o destino: " .. mode, "io" end
  local refused = refusal(what)
  if refused then return nil, refused, "not_regular" end
  local dir, template = temporary_template(path)
  local name = ffi.new("char[?]", #template + 1, template)
  local fd = C.mkostemp(name, O_CLOEXEC)
  if fd < 0 then return nil, ("não foi possível criar um arquivo em %s: %s"):format(dir, system_error()), "io" end
  C.close(fd)
  C.unlink(name)
  return true
end

-- Replaces path with text (see the file header). Returns true or nil,
-- pt-BR reason, kind.
function M.write(path, text)
  if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
    error("safe_file.write: caminho deve ser um texto não vazio", 2)
  end
  if type(text) ~= "string" then error("safe_file.write: o conteúdo deve ser um texto", 2) end
  local what, mode = inspect(path)
  if not what then return nil, "não foi possível examinar o destino: " .. mode, "io" end
  local refused = refusal(what)
  if refused then return nil, refused, "not_regular" end
  if what == "absent" then
    local mask = C.umask(0x12)
    C.umask(mask)
    mode = bit.band(0x1B6, bit.bnot(mask))
  end
  local dir, template = temporary_template(path)
  local name = ffi.new("char[?]", #template + 1, template)
  local fd = C.mkostemp(name, O_CLOEXEC)
  if fd < 0 then return nil, ("falha ao criar o arquivo temporário em %s: %s"):format(dir, system_error()), "io" end
  local tmp = ffi.string(name)
  local ok, reason = fill(fd, text, mode)
  if C.close(fd) ~= 0 and ok then ok, reason = nil, "falha ao fechar: " .. system_error() end
  if ok and C.rename(tmp, path) ~= 0 then ok, reason = nil, "falha ao substituir o destino: " .. system_error() end
  if not ok then
    C.unlink(tmp)
    return nil, reason, "io"
  end
  sync_directory(dir)
  return true
end

return M
