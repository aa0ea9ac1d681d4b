local f = io.open("/tmp/ragops-hostile-escape", "w")
