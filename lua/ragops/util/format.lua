-- ragops.util.format: numbers, counts, durations and money as a pt-BR
-- reader writes them ("33.612", "12,4 s", "US$ 0,0042"), for every report,
-- progress line and log message.
local M = {}

-- A number that is neither NaN nor infinite.
function M.finite(value)
  return type(value) == "number" and value == value and value ~= math.huge and value ~= -math.huge
end

-- value when finite, else 0.
function M.number_or_zero(value)
  if M.finite(value) then return value end
  return 0
end

-- Groups the digits of a non-negative integer string with ".".
local function group_thousands(digits)
  local out = digits:reverse():gsub("(%d%d%d)", "%1."):reverse()
  if out:sub(1, 1) == "." then out = out:sub(2) end
  return out
end

-- pt-BR number: thousands ".", decimal ",". `decimals` defaults to 0.
function M.format_number(value, decimals)
  if not M.finite(value) then return "-" end
  decimals = decimals or 0
  local text = string.format("%." .. decimals .. "f", value)
  local negative = text:sub(1, 1) == "-"
  if negative then text = text:sub(2) end
  local integer, fraction = text:match("^(%d+)%.?(%d*)$")
  local out = group_thousands(integer)
  if fraction ~= "" then out = out .. "," .. fraction end
  if negative and out:find("[1-9]") then out = "-" .. out end
  return out
end

-- Integer counter in pt-BR ("33.612").
function M.format_count(value)
  return M.format_number(math.floor(M.number_or_zero(value) + 0.5), 0)
end

-- Durations: "12,4 s", "1 min 12,4 s", "2 h 05 min 03 s".
function M.format_duration(seconds)
  if not M.finite(seconds) or seconds < 0 then return "-" end
  if seconds < 60 then
    return M.format_number(seconds, 1) .. " s"
  end
  if seconds < 3600 then
    local minutes = math.floor(seconds / 60)
    local rest = seconds - minutes * 60
    if rest >= 59.95 then minutes, rest = minutes + 1, 0 end
    return string.format("%d min %s s", minutes, M.format_number(rest, 1))
  end
  local total = math.floor(seconds + 0.5)
  local hours = math.floor(total / 3600)
  local minutes = math.floor((total % 3600) / 60)
  return string.format("%d h %02d min %02d s", hours, minutes, total % 60)
end

-- Money in US$: 2 decimals, 4 when the value is below one cent.
function M.format_usd(value)
  if not M.finite(value) then return "US$ -" end
  if value ~= 0 and math.abs(value) < 0.01 then
    return "US$ " .. M.format_number(value, 4)
  end
  return "US$ " .. M.format_number(value, 2)
end

return M
