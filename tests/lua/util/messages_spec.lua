-- messages_spec.lua: ragops.util.messages turns the English texts a person may
-- read (LuaJIT parser/runtime, io.open, libpq) into pt-BR.

local messages = require "ragops.util.messages"

-- Actual LuaJIT parser message for `src`.
local function parse_error(src)
  local _, err = loadstring(src, "@p.lua")
  return err
end

describe("messages.translate", function()
  local cases = {
    { parse_error("x 1"), "p.lua:1: '=' esperado perto de '1'" },
    { parse_error("local function f()\n return 1\n"),
      "p.lua:3: 'end' esperado (para fechar 'function' da linha 1) perto de '<eof>'" },
    { parse_error("local a = 3x4"), "p.lua:1: número mal formado perto de '3x4'" },
    { parse_error("a = = 2"), "p.lua:1: símbolo inesperado perto de '='" },
    { parse_error("a = 'abc"), "p.lua:1: texto (string) não terminado perto de '<eof>'" },
    { parse_error("local t = {a=1 b=2}"), "p.lua:1: '}' esperado perto de 'b'" },
    { "attempt to index a nil value", "tentativa de indexar um valor nil" },
    { "x.lua:3: attempt to index local 'row' (a nil value)",
      "x.lua:3: tentativa de indexar a variável local 'row' (valor nil)" },
    { "attempt to call global 'foo' (a nil value)", "tentativa de chamar a global 'foo' (valor nil)" },
    { "attempt to perform arithmetic on a table value", "tentativa de fazer aritmética com um valor table" },
    { "attempt to concatenate a nil value", "tentativa de concatenar um valor nil" },
    { "attempt to compare number with nil", "tentativa de comparar number com nil" },
    { "bad argument #1 to 'rep' (number expected, got no value)",
      "argumento #1 inválido para 'rep' (esperado number, recebido nenhum valor)" },
    { "x.lua:9: stack overflow", "x.lua:9: pilha estourada (recursão profunda demais)" },
    { "not enough memory", "memória insuficiente" },
    { "/tmp/x.lua: No such file or directory",
      "/tmp/x.lua: arquivo ou pasta não encontrado (No such file or directory)" },
    { "Permission denied", "permissão negada (Permission denied)" },
    { "Is a directory", "é uma pasta, não um arquivo (Is a directory)" },
    { 'missing "=" after "banana" in connection info string\n',
      'falta "=" depois de "banana" no texto de conexão (missing "=" after "banana" in connection info string)\n' },
    { 'invalid connection option "foo"\n', 'opção de conexão "foo" inválida (invalid connection option)\n' },
    { 'could not translate host name "nada.invalid" to address: Name or service not known',
      'não foi possível resolver o nome do host "nada.invalid" (could not translate host name: nome ou serviço desconhecido)' },
    { 'password authentication failed for user "app"',
      'autenticação por senha falhou para o usuário "app" (password authentication failed)' },
    { "Connection refused", "conexão recusada (Connection refused)" },
    { 'connection to server at "127.0.0.1", port 1 failed: Connection refused',
      'a conexão com o servidor em "127.0.0.1", porta 1, falhou: conexão recusada (Connection refused)' },
  }
  for _, case in ipairs(cases) do
    it(("traduz %q"):format(case[1]), function()
      assert.are.equal(case[2], messages.translate(case[1]))
    end)
  end

  it("deixa texto desconhecido como está e aceita não-textos", function()
    assert.are.equal("chave \"x\" desconhecida", messages.translate("chave \"x\" desconhecida"))
    assert.are.equal("42", messages.translate(42))
  end)
end)
