// pg-connection-string, the parser node-postgres reads its connectionString with: a JSON array
// of URLs on stdin, a JSON array on stdout with, for each URL, {config} (what the parser made
// of it) or {error} (its message). One process for a whole corpus (tests/clients/test_url_corpus.py).
'use strict'
const { parse } = require('pg-connection-string')

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (chunk) => {
  input += chunk
})
process.stdin.on('end', () => {
  const results = JSON.parse(input).map((url) => {
    try {
      return { config: parse(url) }
    } catch (error) {
      return { error: String(error.message) }
    }
  })
  process.stdout.write(JSON.stringify(results))
})
