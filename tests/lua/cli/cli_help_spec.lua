-- cli_help_spec.lua: the help of each command (ragops.cli.commands.help) lists
-- exactly the options its parser accepts, and the docs match it:
--   * README.md, section "Linha de comando", is the reference: one
--     subsection per command ("### `ragops failures list`") listing exactly
--     the options of that command's --help;
--   * every example in README.md and docs/*.md (code blocks and inline
--     `ragops ...` spans) uses only options the command's --help lists.
require "tests.lua.c_stubs"

local cli = require "ragops.cli"
local help = require "ragops.cli.commands.help"

local HOME = os.getenv("RAGOPS_SOURCE_DIR") or "."

local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

-- Set of the --options mentioned in text.
local function options_in(text)
  local out = {}
  for name in text:gmatch("%-%-(%a[%w%-]*)") do out[name] = true end
  return out
end

local function sorted(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The flag spec a module's parser is called with for `args`, captured
-- by a fake cli whose parse stops the command.
local function captured_spec(module, args)
  local spec
  local fake = {
    parse = function(_, s) spec = s; error("capturado", 0) end,
    usage_error = function(fmt, ...) error(fmt:format(...), 0) end,
  }
  pcall(require(module).main, args, fake)
  return spec
end

-- The parser spec of each command that has options.
local function parser_specs()
  local specs = {}
  for name, spec in pairs(cli.FLAGS) do specs[name] = spec end
  for _, sub in ipairs({ "create", "drop", "status" }) do
    specs["index " .. sub] = captured_spec("ragops.cli.commands.index", { sub })
  end
  specs.validate = captured_spec("ragops.cli.commands.validate", {})
  return specs
end

-- Commands with their own help and options (overviews like "failures" excluded).
local COMMANDS, IS_COMMAND = {}, {}
for name in pairs(parser_specs()) do COMMANDS[#COMMANDS + 1] = name; IS_COMMAND[name] = true end
table.sort(COMMANDS)

-- README "Linha de comando": { [command] = set of options } from the
-- subsections whose heading names the command in backticks.
local function readme_reference()
  local readme = read(HOME .. "/README.md")
  local section = readme:match("\n## Linha de comando\n(.-)\n## ")
  assert(section, "README.md sem a seção ## Linha de comando")
  local out, current = {}, {}
  for line in (section .. "\n"):gmatch("([^\n]*)\n") do
    local heading = line:match("^### (.*)$")
    if heading then
      current = {}
      for command in heading:gmatch("`ragops ([^`]+)`") do
        out[(command:gsub(" PLANO%.lua$", ""))] = current
      end
    else
      for option in pairs(options_in(line)) do current[option] = true end
    end
  end
  return out
end

-- Examples of `ragops ...` in a markdown text: inline spans and lines of
-- code blocks (continuations with "\" joined, "# comments" dropped).
local function examples(text)
  local out = {}
  for span in text:gmatch("`(ragops [^`\n]+)`") do out[#out + 1] = span end
  local in_code, pending = false, ""
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      in_code = not in_code
    elseif in_code then
      line = pending .. line
      pending = ""
      if line:match("\\%s*$") then
        pending = line:gsub("\\%s*$", " ")
      else
        local code = line:gsub("%s#%s.*$", "")
        local command = code:match("^%s*%$?%s*(ragops .*)$") or code:match("%s(ragops .*)$")
        if command then out[#out + 1] = command end
      end
    end
  end
  return out
end

-- "ragops failures retry --id 1" -> "failures retry", "--id 1".
local function command_of(example)
  local words = {}
  for word in example:gmatch("%S+") do words[#words + 1] = word end
  local two = words[2] and words[3] and (words[2] .. " " .. words[3])
  if two and help.TEXT[two] then
    return two, table.concat(words, " ", 4)
  end
  return words[2], table.concat(words, " ", 3)
end

describe("ajuda de cada comando", function()
  local specs = parser_specs()

  for _, name in ipairs(COMMANDS) do
    it(("ragops %s --help lista exatamente as opções aceitas"):format(name), function()
      local text = help.TEXT[name]
      assert.is_string(text, "sem ajuda para " .. name)
      assert.same(sorted(specs[name]), sorted(options_in(text)))
    end)
  end
end)

describe("documentação × ajuda", function()
  local reference = readme_reference()

  for _, name in ipairs(COMMANDS) do
    it(("README.md (Linha de comando) descreve as opções de ragops %s"):format(name), function()
      assert.is_table(reference[name], "README.md sem a subseção ### `ragops " .. name .. "`")
      assert.same(sorted(options_in(help.TEXT[name])), sorted(reference[name]))
    end)
  end

  local docs = { "README.md" }
  local p = io.popen("ls " .. HOME .. "/docs/*.md")
  for path in p:lines() do docs[#docs + 1] = path:sub(#HOME + 2) end
  p:close()

  for _, doc in ipairs(docs) do
    it(doc .. ": os exemplos só usam opções que existem", function()
      local problems = {}
      for _, example in ipairs(examples(read(HOME .. "/" .. doc))) do
        local name, rest = command_of(example)
        if IS_COMMAND[name] then
          local known = options_in(help.TEXT[name])
          for option in pairs(options_in(rest)) do
            if not known[option] and option ~= "help" then
              problems[#problems + 1] = ("--%s em `%s`"):format(option, example)
            end
          end
        end
      end
      assert.same({}, problems)
    end)
  end
end)
