-- plans/golden_demo.lua: conjunto golden (consultas de referência) dos dados
-- de `make demo`: versículos da King James (entity_type "verse", id = verses.id)
-- e textos do fortunes-br (entity_type "fortune", id = fortunes.id).
--
-- Cada consulta diz quais entidades uma busca semântica decente deve trazer
-- entre as k primeiras. As consultas são paráfrases ou citações parciais, não
-- o texto exato: o embed-server do demo usa feature hashing de palavras e
-- trigramas de caracteres, então paráfrases que compartilham palavras
-- funcionam e sinônimos puros não. Algumas consultas são de propósito mais
-- difíceis (poucas palavras em comum); elas mostram o limite do modelo e não
-- foram retiradas para inflar o número. Quando o mesmo texto aparece em mais
-- de um livro, todas as ocorrências quase idênticas são esperadas.
--
-- Uso: ragops validate plans/golden_demo.lua [--k 10] [--report-json FILE]
-- (plans/validate_quality.lua importa este arquivo e fixa os limites do deploy).
return {
  name = "demo-kjv-fortunes",
  k = 10,
  min_recall = 0.8,
  min_mrr = 0.5,
  queries = {
    -- Versículos: citação parcial.
    { query = "In the beginning God created the heaven and the earth",
      expect = { { entity_type = "verse", entity_id = "1" } } },
    { query = "God said let there be light",
      expect = { { entity_type = "verse", entity_id = "3" } } },
    { query = "the Lord is my shepherd, I shall not want",
      expect = { { entity_type = "verse", entity_id = "14237" } } },
    { query = "Jesus wept",
      expect = { { entity_type = "verse", entity_id = "26559" } } },
    { query = "I am the way, the truth and the life",
      expect = { { entity_type = "verse", entity_id = "26675" } } },
    { query = "our Father in heaven, hallowed be thy name",
      expect = { { entity_type = "verse", entity_id = "23292" }, { entity_type = "verse", entity_id = "25408" } } },

    -- Versículos: paráfrase com palavras em comum.
    { query = "walking through the valley of the shadow of death without fearing evil",
      expect = { { entity_type = "verse", entity_id = "14240" } } },
    { query = "God loved the world so much that he gave his only son so believers have everlasting life",
      expect = { { entity_type = "verse", entity_id = "26137" } } },
    { query = "there is nothing new under the sun",
      expect = { { entity_type = "verse", entity_id = "17325" } } },
    { query = "a season for every thing and a time for every purpose under heaven",
      expect = { { entity_type = "verse", entity_id = "17361" } } },
    { query = "blessed are the meek because they will inherit the earth",
      expect = { { entity_type = "verse", entity_id = "23240" } } },
    { query = "ask and it will be given, seek and you will find, knock and it will be opened",
      expect = { { entity_type = "verse", entity_id = "23324" }, { entity_type = "verse", entity_id = "25415" } } },
    { query = "a camel going through the eye of a needle is easier than a rich man entering the kingdom of God",
      expect = { { entity_type = "verse", entity_id = "23787" }, { entity_type = "verse", entity_id = "24614" } } },
    { query = "pride goes before destruction and a haughty spirit before the fall",
      expect = { { entity_type = "verse", entity_id = "16859" } } },
    { query = "man does not live by bread alone but by every word of God",
      expect = { { entity_type = "verse", entity_id = "23214" }, { entity_type = "verse", entity_id = "25068" } } },
    { query = "Jonah spent three days and three nights in the belly of the great fish",
      expect = { { entity_type = "verse", entity_id = "22549" } } },
    { query = "the wages of sin is death, the gift of God is eternal life",
      expect = { { entity_type = "verse", entity_id = "28092" } } },
    { query = "faith, hope and charity, and the greatest of them is charity",
      expect = { { entity_type = "verse", entity_id = "28679" } } },
    { query = "where is your brother Abel? am I my brother's keeper",
      expect = { { entity_type = "verse", entity_id = "89" } } },

    -- Versículos: paráfrase difícil (poucas palavras em comum).
    { query = "God will dry every tear; there will be no more death, sorrow or pain",
      expect = { { entity_type = "verse", entity_id = "31058" } } },
    { query = "baby born and placed in a manger because the inn had no room",
      expect = { { entity_type = "verse", entity_id = "24981" } } },
    { query = "the king had Daniel thrown to the lions",
      expect = { { entity_type = "verse", entity_id = "21922" } } },

    -- fortunes-br (português).
    { query = "por que a galinha atravessou a rua",
      expect = { { entity_type = "fortune", entity_id = "1" } } },
    { query = "gato cai de pé e pão cai com a manteiga para baixo: e se passar manteiga no gato?",
      expect = { { entity_type = "fortune", entity_id = "2" } } },
    { query = "Vicente Matheus com terçol no olho achou que era pleonasmo",
      expect = { { entity_type = "fortune", entity_id = "4" } } },
    { query = "sexta-feira se escreve com s ou com x? marca para quinta-feira",
      expect = { { entity_type = "fortune", entity_id = "5" } } },
    { query = "taxista mostra o Maracanã aos gringos e diz que de manhã não tinha nada",
      expect = { { entity_type = "fortune", entity_id = "7" } } },
    { query = "Pelé enganou o zagueiro do São Paulo e ganhou um pênalti",
      expect = { { entity_type = "fortune", entity_id = "8" } } },
  },
}
