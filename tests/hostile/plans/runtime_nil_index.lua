local cfg = nil
local x = cfg.campo
