// node-postgres with the URL it is given (argv[2]): connect, run `select current_user`, print
// the user and whether the connection is encrypted. On failure: the error's code and message
// on stderr, exit 1.
'use strict'
const { Client } = require('pg')

async function main(url) {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10000 })
  try {
    await client.connect()
    const result = await client.query('select current_user')
    const encrypted = Boolean(client.connection.stream.encrypted)
    console.log(JSON.stringify({ user: result.rows[0].current_user, tls: encrypted }))
  } finally {
    await client.end().catch(() => {})
  }
}

main(process.argv[2]).catch((error) => {
  console.error(`${error.code || error.name}: ${error.message}`)
  process.exit(1)
})
