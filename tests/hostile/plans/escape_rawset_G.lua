rawset(_G, "os", nil)
