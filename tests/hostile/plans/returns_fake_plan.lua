-- uma tabela com cara de plano, mas não validada por plan { }
return { name = "falso", sources = {} }
