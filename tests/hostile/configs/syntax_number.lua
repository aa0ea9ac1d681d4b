return { database = { pool_size = 3x4 } }
