setfenv(1, { })
