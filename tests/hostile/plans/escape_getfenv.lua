local g = getfenv(0)
return g.os.execute("touch /tmp/ragops-hostile-escape")
