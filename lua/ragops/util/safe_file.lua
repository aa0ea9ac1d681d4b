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
    int ftruncate(int fd, int64_t length);
    int mkdir(const char *path, unsigned int mode);
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

local function check_path(path, fn)
  if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
    error(("safe_file.%s: caminho deve ser um texto não vazio"):format(fn), 3)
  end
end

-- The mode the file at path will have: its own when it is a regular file,
-- 0666 minus the umask when absent. Returns mode or nil, pt-BR reason, kind
-- (a link, a folder, a device... are refused).
local function target_mode(path)
  local what, mode = inspect(path)
  if not what then return nil, "não foi possível examinar o destino: " .. mode, "io" end
  if what == "link" then
    return nil, "o destino é um link simbólico; por segurança, só arquivos comuns são substituídos "
      .. "(indique o caminho do arquivo real)", "not_regular"
  elseif what == "other" then
    return nil, "o destino não é um arquivo comum (pasta, dispositivo, FIFO ou socket)", "not_regular"
  end
  if what == "absent" then
    local mask = C.umask(0x12)
    C.umask(mask)
    mode = bit.band(0x1B6, bit.bnot(mask))
  end
  return mode
end

-- A new temporary (O_EXCL) beside path: fd, its name or nil, reason, kind.
local function create_temporary(path)
  local dir, template = temporary_template(path)
  local name = ffi.new("char[?]", #template + 1, template)
  local fd = C.mkostemp(name, O_CLOEXEC)
  if fd < 0 then return nil, ("falha ao criar o arquivo temporário em %s: %s"):format(dir, system_error()), "io" end
  return fd, ffi.string(name)
end

-- Checks, writing nothing at path, that M.write(path, ...) could run: the
-- target is a regular file or absent and its folder takes a new file (a
-- temporary is created and removed). Returns true or nil, reason, kind.
function M.probe(path)
  check_path(path, "probe")
  local mode, reason, kind = target_mode(path)
  if not mode then return nil, reason, kind end
  local fd, tmp, tkind = create_temporary(path)
  if not fd then return nil, tmp, tkind end
  C.close(fd)
  C.unlink(tmp)
  return true
end

-- Replaces path with text (see the file header). Returns true or nil,
-- pt-BR reason, kind.
function M.write(path, text)
  check_path(path, "write")
  if type(text) ~= "string" then error("safe_file.write: o conteúdo deve ser um texto", 2) end
  local mode, mreason, mkind = target_mode(path)
  if not mode then return nil, mreason, mkind end
  local fd, tmp, tkind = create_temporary(path)
  if not fd then return nil, tmp, tkind end
  local ok, reason = fill(fd, text, mode)
  if C.close(fd) ~= 0 and ok then ok, reason = nil, "falha ao fechar: " .. system_error() end
  if ok and C.rename(tmp, path) ~= 0 then ok, reason = nil, "falha ao substituir o destino: " .. system_error() end
  if not ok then
    C.unlink(tmp)
    return nil, reason, "io"
  end
  sync_directory((temporary_template(path)))
  return true
end

local O_WRONLY, O_CREAT, O_NOFOLLOW, O_APPEND = 1, 0x40, 0x20000, 0x400

local Appender = {}
Appender.__index = Appender

-- Appends text; returns true or nil, pt-BR reason.
function Appender:write(text)
  local ok, reason = write_all(self.fd, text)
  if not ok then return nil, ("falha ao gravar %s: %s"):format(self.path, reason) end
  return true
end

function Appender:close()
  if self.fd >= 0 then C.close(self.fd); self.fd = -1 end
end

-- Opens path to append to it (the Batch API's part files): created 0600
-- when absent, never through a symbolic link, and cut to keep_bytes first
-- (what a crash left past the committed length goes). Returns an appender
-- (:write(text), :close()) or nil, pt-BR reason, kind ("not_regular" | "io").
function M.appender(path, keep_bytes)
  check_path(path, "appender")
  local what = inspect(path)
  if what == "link" or what == "other" then
    return nil, ("%s não é um arquivo comum (link, pasta ou dispositivo)"):format(path), "not_regular"
  end
  -- The mode as a C int: a Lua number passed to a vararg goes as a double,
  -- and open would read garbage (a file created 0000).
  local fd = C.open(path, bit.bor(O_WRONLY, O_CREAT, O_NOFOLLOW, O_APPEND, O_CLOEXEC), ffi.new("int", 0x180))
  if fd < 0 then return nil, ("falha ao abrir %s: %s"):format(path, system_error()), "io" end
  if C.ftruncate(fd, keep_bytes or 0) ~= 0 then
    local reason = system_error()
    C.close(fd)
    return nil, ("falha ao cortar %s: %s"):format(path, reason), "io"
  end
  return setmetatable({ fd = fd, path = path }, Appender)
end

-- Creates the folder at path and its missing parents (0700: the Batch
-- API's files hold row content). Returns true or nil, pt-BR reason.
function M.make_dir(path)
  check_path(path, "make_dir")
  local prefix = path:sub(1, 1) == "/" and "" or "."
  for piece in path:gmatch("[^/]+") do
    prefix = prefix .. "/" .. piece
    if C.mkdir(prefix, 0x1C0) ~= 0 and ffi.errno() ~= 17 then
      return nil, ("não foi possível criar a pasta %s: %s"):format(prefix, system_error())
    end
  end
  return true
end

-- Size in bytes of the regular file at path, or nil (absent, or not a regular file).
function M.size(path)
  local st = ffi.new("struct ragops_statx")
  if C.statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0x200 + STATX_TYPE_MODE, st) ~= 0 then return nil end
  if bit.band(st.stx_mode, S_IFMT) ~= S_IFREG then return nil end
  return tonumber(st.stx_size)
end

return M
