-- ragops.messages: translates the English texts a person may read (LuaJIT's
-- parser and runtime errors, system errors from io.open, libpq connection
-- errors) to pt-BR, keeping the original in parentheses where it helps to
-- search for it. One table, one function: messages.translate(text).

local M = {}

-- Lua names and tokens quoted by LuaJIT ('x', '<eof>') stay as they are.
-- Order matters: specific patterns before the general ones.
local LUA = {
  -- parser
  { "'end' expected %(to close '([^']*)' at line (%d+)%) near ('[^']*')",
    "'end' esperado (para fechar '%1' da linha %2) perto de %3" },
  { "'([^']*)' expected %(to close '([^']*)' at line (%d+)%) near ('[^']*')",
    "'%1' esperado (para fechar '%2' da linha %3) perto de %4" },
  { "'([^']*)' expected near ('[^']*')", "'%1' esperado perto de %2" },
  { "function arguments expected near ('[^']*')", "argumentos de função esperados perto de %1" },
  { "malformed number near ('[^']*')", "número mal formado perto de %1" },
  { "unexpected symbol near ('[^']*')", "símbolo inesperado perto de %1" },
  { "unexpected symbol", "símbolo inesperado" },
  { "unfinished long string near", "texto longo ([[...]]) não terminado perto de" },
  { "unfinished long comment near", "comentário longo não terminado perto de" },
  { "unfinished string near", "texto (string) não terminado perto de" },
  { "invalid escape sequence near", "sequência de escape inválida perto de" },
  { "undefined label ('[^']*')", "rótulo %1 não definido" },
  { "no loop to break", "break fora de um laço" },
  { "chunk has too many syntax levels", "código com aninhamento demais" },
  { "too many local variables", "variáveis locais demais" },
  { "too many upvalues", "upvalues demais" },
  { "function or expression too complex", "função ou expressão complexa demais" },
  -- runtime
  { "attempt to (%a+) (%a+) '([^']*)' %(a (%a+) value%)", function(verb, kind, name, typ)
      local verbs = { call = "chamar", index = "indexar" }
      local kinds = { ["local"] = "a variável local", global = "a global", field = "o campo",
                      method = "o método", upvalue = "o upvalue", constant = "a constante" }
      if not verbs[verb] or not kinds[kind] then return nil end
      return string.format("tentativa de %s %s '%s' (valor %s)", verbs[verb], kinds[kind], name, typ)
    end },
  { "attempt to call a (%a+) value", "tentativa de chamar um valor %1" },
  { "attempt to index a (%a+) value", "tentativa de indexar um valor %1" },
  { "attempt to perform arithmetic on a (%a+) value", "tentativa de fazer aritmética com um valor %1" },
  { "attempt to perform arithmetic on", "tentativa de fazer aritmética com" },
  { "attempt to concatenate a (%a+) value", "tentativa de concatenar um valor %1" },
  { "attempt to concatenate", "tentativa de concatenar" },
  { "attempt to get length of a (%a+) value", "tentativa de obter o tamanho de um valor %1" },
  { "attempt to compare two (%a+) values", "tentativa de comparar dois valores %1" },
  { "attempt to compare (%a+) with (%a+)", "tentativa de comparar %1 com %2" },
  { "bad argument #(%d+) to '([^']*)' %((%a+) expected, got (%a+ ?%a*)%)",
    "argumento #%1 inválido para '%2' (esperado %3, recebido %4)" },
  { "bad argument #(%d+) to '([^']*)' %(([^)]*)%)", "argumento #%1 inválido para '%2' (%3)" },
  { "table index is nil", "índice de tabela nil" },
  { "table index is NaN", "índice de tabela NaN" },
  { "table overflow", "tabela grande demais (table overflow)" },
  { "invalid key to 'next'", "chave inválida para 'next'" },
  { "string length overflow", "texto grande demais (string length overflow)" },
  { "malformed pattern %(([^)]*)%)", "padrão de texto mal formado (malformed pattern: %1)" },
  { "invalid capture index", "índice de captura inválido no padrão" },
  { "invalid option '([^']*)' to 'format'", "opção %1 inválida para string.format" },
  { "C stack overflow", "pilha C estourada (recursão profunda demais)" },
  { "stack overflow", "pilha estourada (recursão profunda demais)" },
  { "error in error handling", "erro no tratamento de erro" },
  { "not enough memory", "memória insuficiente" },
}

-- System errors (strerror) as returned by io.open.
local SYSTEM = {
  { "No such file or directory", "arquivo ou pasta não encontrado (No such file or directory)" },
  { "Permission denied", "permissão negada (Permission denied)" },
  { "Is a directory", "é uma pasta, não um arquivo (Is a directory)" },
  { "Not a directory", "parte do caminho não é uma pasta (Not a directory)" },
  { "File name too long", "nome de arquivo longo demais (File name too long)" },
  { "Too many open files", "arquivos abertos demais (Too many open files)" },
}

-- libpq connection errors.
local LIBPQ = {
  { 'connection to server at "([^"]*)" %(([^)]*)%), port (%d+) failed:',
    'a conexão com o servidor em "%1" (%2), porta %3, falhou:' },
  { 'connection to server at "([^"]*)", port (%d+) failed:', 'a conexão com o servidor em "%1", porta %2, falhou:' },
  { 'connection to server on socket "([^"]*)" failed:', 'a conexão com o servidor pelo socket "%1" falhou:' },
  { 'missing "=" after "([^"]*)" in connection info string',
    'falta "=" depois de "%1" no texto de conexão (missing "=" after "%1" in connection info string)' },
  { 'invalid connection option "([^"]*)"',
    'opção de conexão "%1" inválida (invalid connection option)' },
  { 'invalid URI query parameter: "([^"]*)"', 'parâmetro "%1" inválido na URL de conexão (invalid URI query parameter)' },
  { 'could not translate host name "([^"]*)" to address: ([^\n]*)',
    'não foi possível resolver o nome do host "%1" (could not translate host name: %2)' },
  { 'password authentication failed for user "([^"]*)"',
    'autenticação por senha falhou para o usuário "%1" (password authentication failed)' },
  { 'database "([^"]*)" does not exist', 'o banco de dados "%1" não existe (database does not exist)' },
  { 'role "([^"]*)" does not exist', 'o usuário (role) "%1" não existe (role does not exist)' },
  { "no password supplied", "senha não informada (no password supplied)" },
  { "Connection refused", "conexão recusada (Connection refused)" },
  { "Is the server running on that host and accepting TCP/IP connections%?",
    "o servidor está rodando nesse host e aceitando conexões TCP/IP?" },
  { "Is the server running locally and accepting connections on that socket%?",
    "o servidor está rodando localmente e aceitando conexões nesse socket?" },
  { "server closed the connection unexpectedly", "o servidor fechou a conexão inesperadamente (server closed the connection unexpectedly)" },
  { "timeout expired", "tempo de conexão esgotado (timeout expired)" },
  { "Name or service not known", "nome ou serviço desconhecido" },
  { "Temporary failure in name resolution", "falha temporária na resolução de nomes" },
}

local TABLES = { LUA, SYSTEM, LIBPQ }

-- Returns `text` with every known English message replaced by its pt-BR
-- version. Unknown text is returned unchanged; non-strings go through
-- tostring.
function M.translate(text)
  text = tostring(text)
  for _, entries in ipairs(TABLES) do
    for _, entry in ipairs(entries) do
      local replaced = text:gsub(entry[1], entry[2])
      text = replaced
    end
  end
  return text
end

return M
