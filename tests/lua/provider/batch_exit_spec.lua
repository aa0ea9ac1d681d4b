-- batch_exit_spec.lua: the one mapping from a kind of ragops.provider.batch
-- failure to an exit code (provider.batch.exit_code), used by the run
-- (run.batch.remote) and by `ragops batch cancel` (cli.commands.batch):
-- the operator's kinds exit 2, what may come back exits 4.
require "tests.lua.c_stubs"
local batch_api = require "ragops.provider.batch"
local exit = require "ragops.util.exit"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

describe("lotes: código de saída de uma falha da API de lotes", function()
  it("o que o operador corrige (chave, URL, modelo, limite, arquivo grande demais) sai com 2", function()
    for _, kind in ipairs({ "fatal", "refused", "usage", "file_too_large" }) do
      assert.are.equal(exit.usage, batch_api.exit_code(kind), kind)
    end
  end)

  it("o que pode voltar (rede, 5xx, resposta estranha, inexistente) sai com 4", function()
    for _, kind in ipairs({ "unreachable", "invalid_answer", "not_found", "body_too_large", "file", "exists" }) do
      assert.are.equal(exit.unreachable, batch_api.exit_code(kind), kind)
    end
  end)

  it("a execução e o batch cancel usam a mesma tabela (nenhuma cópia local de OPERATOR_KINDS)", function()
    local root = os.getenv("RAGOPS_SOURCE_DIR") or "."
    for _, path in ipairs({ "lua/ragops/run/batch/remote.lua", "lua/ragops/cli/commands/batch.lua" }) do
      local text = read(root .. "/" .. path)
      assert.is_nil(text:find("OPERATOR_KINDS", 1, true), path)
      assert.truthy(text:find("batch_api.exit_code(kind)", 1, true), path)
    end
  end)
end)
