-- package_spec.lua: ragops installed as a service (issue 22). The runtime is
-- found only relative to the binary (<prefix>/bin/ragops -> <prefix>/share/ragops)
-- or in the source tree for a binary in its build folder; anything else is a
-- pt-BR error (exit 2) naming where it looked. `make deb` builds the .deb, which
-- is extracted with dpkg -x into a temporary root and run from another folder
-- with the operator's plans outside the source tree; its Depends are checked;
-- the shipped systemd units pass `systemd-analyze verify` inside that root.
local H = require "tests.integration.helper"

local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(H.sh("mkdir -p " .. H.q(dir)) == 0)
  return dir
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

describe("runtime encontrado só a partir do binário", function()
  local dir

  setup(function() dir = tmpdir() end)
  teardown(function() H.sh("rm -rf " .. H.q(dir)) end)

  it("binário copiado com o seu share/ para outro prefixo roda de outra pasta", function()
    local prefix = dir .. "/com-share"
    assert(H.sh(("mkdir -p %s/bin %s/share/ragops && cp %s %s/bin/ragops && cp -r %s/lua %s/share/ragops/")
      :format(H.q(prefix), H.q(prefix), H.q(H.bin), H.q(prefix), H.q(H.source_dir), H.q(prefix))) == 0)
    local code, out, err = H.sh(("cd %s && %s --version"):format(H.q(dir), H.q(prefix .. "/bin/ragops")))
    assert.are.equal(0, code, err)
    assert.matches("^ragops %d+%.%d+%.%d+", out)
  end)

  it("prefixo sem share/: código 2 e a mensagem nomeia onde procurou (sem cair na pasta de fontes)", function()
    local prefix = dir .. "/sem-share"
    assert(H.sh(("mkdir -p %s/bin && cp %s %s/bin/ragops"):format(H.q(prefix), H.q(H.bin), H.q(prefix))) == 0)
    local code, out, err = H.sh(("cd / && %s --version"):format(H.q(prefix .. "/bin/ragops")))
    assert.are.equal(2, code, out .. err)
    assert.are.equal("", out)
    assert.truthy(err:find("não encontrei o runtime Lua", 1, true), err)
    assert.truthy(err:find(prefix .. "/share/ragops/lua", 1, true), err)
    assert.falsy(err:find(H.source_dir, 1, true), err)
  end)

  it("RAGOPS_HOME só com plans/ não é ignorado em silêncio: código 2 nomeando a pasta", function()
    local home = dir .. "/meuapp"
    assert(H.sh("mkdir -p " .. H.q(home .. "/plans")) == 0)
    local code, out, err = H.sh(("cd / && RAGOPS_HOME=%s %s --version"):format(H.q(home), H.q(H.bin)))
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("RAGOPS_HOME=" .. home .. " não contém o runtime Lua", 1, true), err)
    assert.truthy(err:find(home .. "/lua/ragops/cli/init.lua", 1, true), err)
  end)

  it("embed-server ausente ao lado do binário: código 2 nomeando os caminhos", function()
    local prefix = dir .. "/sem-embed"
    assert(H.sh(("mkdir -p %s/bin && cp %s %s/bin/ragops"):format(H.q(prefix), H.q(H.bin), H.q(prefix))) == 0)
    local code, _, err = H.sh(("cd / && %s embed-server --help"):format(H.q(prefix .. "/bin/ragops")))
    assert.are.equal(2, code, err)
    assert.truthy(err:find(prefix .. "/bin/ragops-embed-server", 1, true), err)
    assert.truthy(err:find(prefix .. "/bin/../lib/ragops/ragops-embed-server", 1, true), err)
  end)
end)

describe("pacote .deb (make deb, dpkg -x)", function()
  local deb, root, work

  setup(function()
    local build = H.source_dir .. "/build-deb"
    local code, out, err = H.sh(("make -C %s deb DEB_DIR=%s"):format(H.q(H.source_dir), H.q(build)))
    assert(code == 0, "make deb falhou: " .. out:sub(-2000) .. err:sub(-2000))
    local _, listing = H.sh("ls " .. H.q(build) .. "/ragops_*.deb")
    deb = assert(listing:match("[^\n]+"), "nenhum .deb em " .. build)
    root, work = tmpdir(), tmpdir()
    code, _, err = H.sh(("dpkg -x %s %s"):format(H.q(deb), H.q(root)))
    assert(code == 0, "dpkg -x falhou: " .. err)
  end)

  teardown(function()
    if root then H.sh("rm -rf " .. H.q(root) .. " " .. H.q(work)) end
  end)

  local function field(name)
    local code, out, err = H.sh(("dpkg-deb -f %s %s"):format(H.q(deb), name))
    assert(code == 0, err)
    return (out:gsub("%s+$", ""))
  end

  it("Depends traz as bibliotecas do motor e o lua-cjson", function()
    local depends = field("Depends")
    for _, pkg in ipairs({ "libluajit", "libuv1", "libpq5", "libcurl4", "lua%-cjson", "libjansson4", "libxxhash0" }) do
      assert.truthy(depends:find(pkg), ("Depends sem %s: %s"):format(pkg, depends))
    end
    assert.falsy(depends:find("libasan"), depends)
    assert.are.equal("ragops", field("Package"))
  end)

  it("a versão do pacote é a do ragops --version", function()
    local code, out, err = H.sh(("cd / && %s --version"):format(H.q(root .. "/usr/bin/ragops")))
    assert.are.equal(0, code, err)
    assert.are.equal("ragops " .. field("Version") .. "\n", out)
  end)

  it("instala binário, embed-server, runtime, planos de exemplo, documentação e unidades", function()
    for _, path in ipairs({ "/usr/bin/ragops", "/usr/lib/ragops/ragops-embed-server",
        "/usr/share/ragops/lua/ragops/cli/init.lua", "/usr/share/ragops/plans/backfill.lua",
        "/usr/share/ragops/plans/exemplos/backfill.lua", "/usr/share/ragops/plans/exemplos/sync.lua",
        "/usr/share/doc/ragops/README.md", "/usr/share/doc/ragops/docs/instalacao.md",
        "/usr/share/doc/ragops/config.example.lua",
        "/usr/lib/systemd/system/ragops-sync.service", "/usr/lib/systemd/system/ragops-backfill.service",
        "/usr/lib/systemd/system/ragops-backfill.timer" }) do
      assert.is_true(exists(root .. path), "faltou " .. path .. " no pacote")
    end
  end)

  it("ragops embed-server do pacote acha o seu binário em /usr/lib/ragops", function()
    local code, out, err = H.sh(("cd / && %s embed-server --help"):format(H.q(root .. "/usr/bin/ragops")))
    assert.are.equal(0, code, err)
    assert.truthy(out:find("Uso: ragops embed-server", 1, true), out)
  end)

  it("roda de outra pasta ragops backfill com o plano do operador fora do repositório (plans.default e --plan)", function()
    local url = H.migrated_db("ragops_it_package", 10, 2)
    local plans = work .. "/planos"
    assert(H.sh(("mkdir -p %s %s/cwd"):format(H.q(plans), H.q(work))) == 0)
    write(plans .. "/plano.lua", assert(H.read_all(H.source_dir .. "/plans/backfill.lua")))
    -- plans.dir relative to the configuration's folder, the default plan named there.
    write(work .. "/config.lua", 'return { plans = { dir = "planos", default = "plano" } }\n')
    local bin = H.q(root .. "/usr/bin/ragops")
    local code, out, err = H.sh(("cd %s/cwd && env %s %s backfill --config %s"):format(H.q(work), H.env(url),
      bin, H.q(work .. "/config.lua")))
    assert.are.equal(0, code, out .. err)
    assert.are.equal(12, H.scalar(url, "select count(*) from rag_documents"))
    -- The same plan named with --plan through RAGOPS_PLANS: nothing changed, nothing sent.
    code, out, err = H.sh(("cd %s/cwd && env %s RAGOPS_PLANS=%s %s backfill --plan plano"):format(H.q(work),
      H.env(url), H.q(plans), bin))
    assert.are.equal(0, code, out .. err)
    assert.are.equal(12, H.scalar(url, "select count(*) from rag_documents"))
  end)

  it("systemd-analyze verify aceita as unidades instaladas, sem aviso", function()
    -- The host's units (targets the ours name) go into the root, under /lib.
    assert(H.sh(("mkdir -p %s/lib/systemd %s/etc/ragops && cp -a /usr/lib/systemd/system %s/lib/systemd/ && touch %s/etc/ragops/ambiente")
      :format(H.q(root), H.q(root), H.q(root), H.q(root))) == 0)
    local units = {}
    for _, name in ipairs({ "ragops-sync.service", "ragops-backfill.service", "ragops-backfill.timer" }) do
      units[#units + 1] = H.q(root .. "/usr/lib/systemd/system/" .. name)
    end
    local code, out, err = H.sh(("SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no --root=%s %s")
      :format(H.q(root), table.concat(units, " ")))
    assert.are.equal(0, code, out .. err)
    assert.are.equal("", out .. err)
  end)
end)

describe("unidades systemd e o exemplo da documentação", function()
  local UNITS = { "ragops-sync.service", "ragops-backfill.service", "ragops-backfill.timer" }

  local function settings(path)
    local text = assert(H.read_all(path), path)
    local got = {}
    for line in text:gmatch("[^\n]+") do
      local key, value = line:match("^(%w+)=(.*)$")
      if key then got[key] = value end
      -- systemd has no end-of-line comments: a '#' after a setting is part of its value.
      assert.falsy(key and value:find("%s#"), path .. ": comentário no fim da linha: " .. line)
    end
    return got
  end

  it("sem comentário no fim da linha e com a proteção pedida", function()
    for _, name in ipairs(UNITS) do settings(H.source_dir .. "/packaging/systemd/" .. name) end
    local sync = settings(H.source_dir .. "/packaging/systemd/ragops-sync.service")
    assert.matches("^/usr/bin/ragops sync .*%-%-follow", sync.ExecStart)
    assert.are.equal("on-failure", sync.Restart)
    assert.are.equal("2", sync.RestartPreventExitStatus)
    assert.are.equal("/etc/ragops/ambiente", sync.EnvironmentFile)
    for _, key in ipairs({ "DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp" }) do
      assert.are.equal("yes", sync[key], key)
    end
    assert.are.equal("strict", sync.ProtectSystem)
    local backfill = settings(H.source_dir .. "/packaging/systemd/ragops-backfill.service")
    assert.are.equal("oneshot", backfill.Type)
    assert.matches("^/usr/bin/ragops backfill ", backfill.ExecStart)
  end)

  it("a unidade de docs/sincronizacao.md usa o binário instalado, sem comentário no fim da linha", function()
    local doc = assert(H.read_all(H.source_dir .. "/docs/sincronizacao.md"))
    local unit = assert(doc:match("```ini\n(.-)```"), "docs/sincronizacao.md sem bloco ini")
    local path = os.tmpname()
    write(path, unit)
    local got = settings(path)
    os.remove(path)
    assert.matches("^/usr/bin/ragops ", got.ExecStart)
    assert.are.equal("/etc/ragops/ambiente", got.EnvironmentFile)
  end)
end)

-- No container runtime here: the examples are read (YAML with lyaml, the
-- Containerfile line by line) and every ragops command they run is checked
-- against `ragops help` (command, flags, plan files among the examples).
describe("exemplos de contêiner, Kubernetes e compose (sem runtime de contêiner)", function()
  local lyaml = require "lyaml"
  local cjson = require "cjson"
  local DIR = H.source_dir .. "/packaging/"

  local function yaml_docs(rel)
    return lyaml.load(assert(H.read_all(DIR .. rel), rel), { all = true })
  end

  local help_cache = {}
  local function help(command)
    if not help_cache[command] then
      local code, out, err = H.sh(("%s help %s"):format(H.q(H.bin), command))
      assert(code == 0, ("ragops help %s: código %s %s"):format(command, tostring(code), err))
      help_cache[command] = out
    end
    return help_cache[command]
  end

  -- argv after the ragops binary: the command exists, its flags are in its
  -- help, a plan file is one of the example plans. Returns the --metrics-listen port.
  local function check_ragops_argv(argv, where)
    local command = argv[1]
    local text = help(command)
    local port
    for i = 2, #argv do
      local arg = argv[i]
      if arg:match("^%-%-") then
        assert.truthy(text:find(arg, 1, true), ("%s: %s não está em ragops help %s"):format(where, arg, command))
      end
      local plan = arg:match("^/etc/ragops/plans/([%w_]+%.lua)$")
      if plan then
        assert.is_true(exists(H.source_dir .. "/plans/" .. plan), where .. ": plano sem exemplo: " .. plan)
      end
      if argv[i - 1] == "--metrics-listen" then port = arg:match(":(%d+)$") end
    end
    return port
  end

  -- The ragops argv inside a container's command (list, or "sh -c" text).
  local function ragops_argv(list)
    local words = {}
    for _, item in ipairs(list) do
      for word in tostring(item):gmatch("[^%s;]+") do words[#words + 1] = word end
    end
    for i, word in ipairs(words) do
      if word == "/usr/bin/ragops" or word == "ragops" then
        local argv = {}
        for j = i + 1, #words do
          if words[j]:match("^[c=$]") or words[j] == "[" then break end
          argv[#argv + 1] = words[j]
        end
        return argv
      end
    end
    error("sem ragops no comando: " .. table.concat(words, " "))
  end

  local function concat(a, b)
    local out = {}
    for _, v in ipairs(a or {}) do out[#out + 1] = v end
    for _, v in ipairs(b or {}) do out[#out + 1] = v end
    return out
  end

  it("Containerfile: Debian 12, instala o .deb que o cpack gera, usuário sem root, HEALTHCHECK em /healthz", function()
    local text = assert(H.read_all(DIR .. "container/Containerfile"))
    assert.matches("\nFROM debian:12", text)
    local _, version = H.sh(H.q(H.bin) .. " --version")
    local _, arch = H.sh("dpkg --print-architecture")
    local expected = ("ragops_%s_%s.deb"):format(version:match("ragops (%S+)"), arch:match("%S+"))
    assert.are.equal(expected, text:match("\nARG RAGOPS_DEB=(%S+)"))
    assert.truthy(text:find("apt-get install -y --no-install-recommends /tmp/${RAGOPS_DEB}", 1, true), text)
    local user = assert(text:match("\nUSER (%S+)"), "sem USER")
    assert.are_not.equal("root", user)
    assert.are_not.equal("0", user)
    local health_port = text:match("\nHEALTHCHECK.-http://127%.0%.0%.1:(%d+)/healthz")
    local argv = concat(cjson.decode(text:match("\nENTRYPOINT (%b[])")), cjson.decode(text:match("\nCMD (%b[])")))
    assert.are.equal("/usr/bin/ragops", table.remove(argv, 1))
    assert.are.equal(check_ragops_argv(argv, "Containerfile"), health_port)
    assert.matches("\nEXPOSE " .. health_port, text)
  end)

  it("Kubernetes: YAML válido, CronJob de backfill, Deployment com sondas em /healthz e anotações do Prometheus", function()
    local kinds = {}
    for _, file in ipairs({ "config.yaml", "migrate-job.yaml", "backfill-cronjob.yaml", "sync-deployment.yaml" }) do
      for _, doc in ipairs(yaml_docs("kubernetes/" .. file)) do
        kinds[doc.kind] = doc
        local spec = doc.kind == "CronJob" and doc.spec.jobTemplate.spec.template.spec
          or (doc.kind == "Job" or doc.kind == "Deployment") and doc.spec.template.spec
        for _, c in ipairs(spec and spec.containers or {}) do
          local port = check_ragops_argv(ragops_argv(concat(c.command, c.args)), file)
          assert.is_false(c.securityContext.allowPrivilegeEscalation, file)
          if doc.kind == "Deployment" then
            local ann = doc.spec.template.metadata.annotations
            assert.are.equal("true", ann["prometheus.io/scrape"])
            assert.are.equal(port, tostring(ann["prometheus.io/port"]))
            for _, probe in ipairs({ c.livenessProbe, c.readinessProbe }) do
              assert.are.equal("/healthz", probe.httpGet.path)
              assert.are.equal(port, tostring(probe.httpGet.port))
            end
          end
        end
        if spec then assert.is_true(spec.securityContext.runAsNonRoot, file) end
      end
    end
    for _, kind in ipairs({ "CronJob", "Job", "Deployment", "ConfigMap", "Secret" }) do
      assert.is_not_nil(kinds[kind], "faltou " .. kind)
    end
  end)

  it("compose: db com pgvector, seguidor e backfill avulso com a imagem do Containerfile", function()
    local compose = yaml_docs("compose/compose.yaml")[1]
    assert.matches("pgvector", compose.services.db.image)
    for _, name in ipairs({ "sync", "backfill", "migrate" }) do
      local service = assert(compose.services[name], "faltou o serviço " .. name)
      check_ragops_argv(ragops_argv(service.entrypoint), "compose " .. name)
      assert.are.equal("service_healthy", service.depends_on.db.condition)
      local dockerfile = DIR .. "compose/" .. service.build.context .. "/" .. service.build.dockerfile
      assert.is_true(exists(dockerfile), dockerfile)
      assert.matches("build%-deb$", service.build.context)
    end
    assert.truthy(table.concat(compose.services.sync.entrypoint, " "):find("--follow", 1, true))
  end)
end)
