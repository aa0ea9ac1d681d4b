-- batch_answers.lua: the canned answers of canned_server.lua for
-- batch_io_spec.lua: the upload endpoint of the files API, an output file's
-- content, a body longer than the download limit the spec sets, and an
-- error; any other path is a 404.
local OUTPUT = '{"custom_id":"u-1","response":{"status_code":200,"body":{"data":[]}}}\n' ..
  '{"custom_id":"u-2","error":{"code":"x","message":"ç"}}\n'

return {
  ["/v1/files"] = function(req)
    return 200, '{"id":"file-abc","object":"file","purpose":"batch","bytes":' .. #req.body .. '}'
  end,
  ["/v1/files/file-out/content"] = function() return 200, OUTPUT end,
  ["/v1/files/file-big/content"] = function() return 200, ("x"):rep(10000) end,
  ["/v1/files/file-gone/content"] = function() return 404, '{"error":{"message":"No such File object"}}' end,
}
