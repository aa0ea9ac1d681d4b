local reg = debug.getregistry()
