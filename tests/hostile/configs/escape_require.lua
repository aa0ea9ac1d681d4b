local ffi = require("ffi")
return {}
