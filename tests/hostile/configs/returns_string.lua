return "database=x"
