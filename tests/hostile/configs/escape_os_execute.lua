os.execute("touch /tmp/ragops-hostile-escape")
return {}
