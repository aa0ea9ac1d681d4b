-- install_spec.lua: after `cmake --install`, the binary finds its Lua runtime
-- and plans under PREFIX/share/ragops, from any working directory, and
-- migrates on each storage.
local H = require "tests.integration.helper"

H.each_storage(function(storage)
  describe("ragops instalado com cmake --install", function()
    local prefix

    setup(function()
      prefix = os.tmpname()
      os.remove(prefix)
      local build_dir = H.bin:match("^(.*)/[^/]*$")
      local code, _, err = H.sh(("cmake --install %s --prefix %s"):format(H.q(build_dir), H.q(prefix)))
      assert(code == 0, "cmake --install falhou: " .. err)
    end)

    teardown(function()
      if prefix then H.sh("rm -rf " .. H.q(prefix)) end
    end)

    it("instala binário, runtime Lua, planos e config de exemplo", function()
      for _, path in ipairs({ "/bin/ragops", "/share/ragops/lua/ragops/cli/init.lua",
                              "/share/ragops/plans/backfill.lua", "/share/ragops/config.example.lua" }) do
        assert.is_not_nil(io.open(prefix .. path, "r"), "faltou " .. path)
      end
    end)

    it("roda de outra pasta usando os planos instalados", function()
      local url = H.migrated_db("ragops_it_install", 10, 2)
      assert.are.equal(storage == "vector" and "vector(1536)" or "real[]", H.column_type(url))
      local code, out, err = H.sh(("cd / && env %s %s backfill --dry-run --config %s")
        :format(H.env(url), H.q(prefix .. "/bin/ragops"), H.q(H.storage_config)))
      assert.are.equal(0, code, err)
      assert.matches("SIMULAÇÃO", out)
      assert.matches("documentos:%s+12", out)
    end)
  end)
end)
