-- ragops.util.messages: translates the English texts a person may read (LuaJIT's
-- parser and runtime errors, system errors from io.open, libpq connection
-- errors) to pt-BR, keeping the original in parentheses where it helps to
-- search for it. One table, one function: messages.translate(text); and the
-- meaning of PostgreSQL's SQLSTATEs an operator must act on (M.postgres).

local M = {}

-- The operations and the kinds of names of LuaJIT's "attempt to ..." errors.
local OPS = { call = "chamar", index = "indexar", concatenate = "concatenar",
              ["perform arithmetic on"] = "fazer aritmética com", ["get length of"] = "obter o tamanho de" }
local KINDS = { ["local"] = "a variável local", global = "a global", field = "o campo", method = "o método",
                upvalue = "o upvalue", constant = "a constante" }

-- "de o campo" -> "do campo", "de a global" -> "da global".
local function contract(text)
  return (text:gsub(" de o ", " do "):gsub(" de a ", " da "))
end

-- What LuaJIT says inside "bad argument #n to 'f' (...)" and "malformed pattern (...)".
local ARG_DETAILS = {
  ["value expected"] = "valor esperado", ["invalid value"] = "valor inválido",
  ["index out of range"] = "índice fora do intervalo", ["base out of range"] = "base fora do intervalo",
  ["level out of range"] = "nível fora do intervalo", ["invalid level"] = "nível inválido",
  ["invalid option"] = "opção inválida", ["invalid format"] = "formato inválido",
  ["coroutine expected"] = "coroutine esperada", ["string slice too long"] = "trecho de texto longo demais",
  ["number out of range"] = "número fora do intervalo", ["no value"] = "nenhum valor",
}
local PATTERN_DETAILS = {
  ["ends with '%'"] = "termina com '%'", ["missing ']'"] = "falta ']'",
  ["invalid capture index"] = "índice de captura inválido", ["invalid pattern capture"] = "captura inválida",
  ["unfinished capture"] = "captura não terminada",
}

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
  -- runtime: LuaJIT's fixed formats "attempt to <op> <kind> 'name' (a <type>
  -- value)" and "attempt to <op> a <type> value" (lj_errmsg.h)
  { "attempt to ([%a ]-) (%a+) '([^']*)' %(a (%a+) value%)", function(op, kind, name, typ)
      if not OPS[op] or not KINDS[kind] then return nil end
      return contract(("tentativa de %s %s '%s' (valor %s)"):format(OPS[op], KINDS[kind], name, typ))
    end },
  { "attempt to ([%a ]-) a (%a+) value", function(op, typ)
      if not OPS[op] then return nil end
      return ("tentativa de %s um valor %s"):format(OPS[op], typ)
    end },
  { "attempt to compare two (%a+) values", "tentativa de comparar dois valores %1" },
  { "attempt to compare (%a+) with (%a+)", "tentativa de comparar %1 com %2" },
  { "'for' initial value must be a number", "o valor inicial do 'for' deve ser um número" },
  { "'for' limit must be a number", "o limite do 'for' deve ser um número" },
  { "'for' step must be a number", "o passo do 'for' deve ser um número" },
  { "attempt to yield across C%-call boundary", "tentativa de ceder (yield) através de uma chamada C" },
  { "bad argument #(%d+) to '([^']*)' %((%a+) expected, got (%a+ ?%a*)%)", function(n, fn, want, got)
      return ("argumento #%s inválido para '%s' (esperado %s, recebido %s)"):format(n, fn, want,
        got == "no value" and "nenhum valor" or got)
    end },
  { "bad argument #(%d+) to '([^']*)' %(([^)]*)%)", function(n, fn, detail)
      return ("argumento #%s inválido para '%s' (%s)"):format(n, fn, ARG_DETAILS[detail] or detail)
    end },
  { "invalid value %((%a+)%) at index (%d+) in table for '([^']*)'",
    "valor inválido (%1) no índice %2 da tabela para '%3'" },
  { "too many results to unpack", "resultados demais para unpack" },
  { "wrong number of arguments to '([^']*)'", "número errado de argumentos para '%1'" },
  { "invalid order function for sorting", "função de ordem inválida para table.sort" },
  { "loop in gettable", "laço em gettable (__index em ciclo)" },
  { "loop in settable", "laço em settable (__newindex em ciclo)" },
  { "cannot resume dead coroutine", "não é possível retomar uma coroutine encerrada" },
  { "cannot resume non%-suspended coroutine", "não é possível retomar uma coroutine que não está suspensa" },
  { "'tostring' must return a string to 'print'", "'tostring' deve devolver um texto para 'print'" },
  { "table index is nil", "índice de tabela nil" },
  { "table index is NaN", "índice de tabela NaN" },
  { "table overflow", "tabela grande demais (table overflow)" },
  { "invalid key to 'next'", "chave inválida para 'next'" },
  { "string length overflow", "texto grande demais (string length overflow)" },
  { "malformed pattern %(([^)]*)%)", function(detail)
      local translated = PATTERN_DETAILS[detail]
        or detail:gsub("^missing '(.)' after '(..)' in pattern$", "falta '%1' depois de '%2' no padrão")
      return ("padrão de texto mal formado (%s)"):format(translated)
    end },
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
  { "server does not support SSL, but SSL was required",
    "o servidor não aceita SSL, mas a URL exige SSL (sslmode=require ou mais estrito): confira o sslmode da "
      .. "URL ou a configuração ssl do servidor (server does not support SSL, but SSL was required)" },
  { 'server certificate for "([^"]*)" does not match host name "([^"]*)"',
    'o certificado do servidor ("%1") não corresponde ao host "%2" da URL (server certificate does not match host name)' },
  { 'root certificate file "([^"]*)" does not exist',
    'o arquivo de certificado raiz "%1" não existe: informe sslrootcert na URL ou use sslmode=require '
      .. '(root certificate file does not exist)' },
  { 'invalid sslmode value: "([^"]*)"', 'valor "%1" inválido para sslmode (invalid sslmode value)' },
  { "SSL connection has been closed unexpectedly", "a conexão SSL foi fechada inesperadamente (SSL connection has been closed unexpectedly)" },
  { "SSL error: ([^\n]*)", "erro de SSL (SSL error: %1)" },
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

-- What a SQLSTATE of class 42 (syntax error or access rule violation) means,
-- in pt-BR; PostgreSQL's own text stays beside it.
local SQLSTATE = {
  ["42601"] = "erro de sintaxe no SQL", ["42P01"] = "tabela ou visão inexistente",
  ["42703"] = "coluna inexistente", ["42883"] = "função ou operador inexistente",
  ["42501"] = "permissão insuficiente", ["42702"] = "nome de coluna ambíguo",
  ["42804"] = "tipos incompatíveis", ["42P02"] = "parâmetro inexistente",
  ["42803"] = "uso inválido de agrupamento (GROUP BY)", ["42P18"] = "tipo de dado indeterminado",
  ["42P10"] = "referência de coluna inválida", ["42846"] = "conversão de tipo impossível",
}

-- The pt-BR meaning of SQLSTATE state, or nil when there is none to add.
function M.sqlstate(state)
  if type(state) ~= "string" then return nil end
  return SQLSTATE[state] or (state:sub(1, 2) == "42" and "erro de sintaxe ou regra de acesso" or nil)
end

-- err (ragops.pg's pt-BR-prefixed text with PostgreSQL's message) with its
-- SQLSTATE and, when known, what it means: "... (SQLSTATE 42P01: tabela
-- ou visão inexistente)", else "... [SQLSTATE 08006]".
function M.postgres(err, state)
  local meaning = M.sqlstate(state)
  if meaning then return ("%s (SQLSTATE %s: %s)"):format(tostring(err), state, meaning) end
  if type(state) == "string" and state ~= "" then return ("%s [SQLSTATE %s]"):format(tostring(err), state) end
  return tostring(err)
end

return M
