-- Limites pequenos para os testes do corpus hostil (tests/integration/hostile_spec.lua).
return {
  sandbox = { load_ms = 300, load_memory_mb = 32, hook_ms = 50, hook_memory_mb = 8, max_breaches = 3,
              memory_mb = 64 },
}
