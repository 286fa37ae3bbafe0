// node-postgres with the URL it is given (argv[2]): connect, run `select current_user`, print
// the user and whether the connection is encrypted. On failure: the error's code and message
// on stderr, exit 1. CLIENT_SETUP in the environment: a statement run first; CLIENT_QUERY: the
// query whose first value is printed as the user.
'use strict'
const { Client } = require('pg')

async function main(url) {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10000 })
  try {
    await client.connect()
    if (process.env.CLIENT_SETUP) await client.query(process.env.CLIENT_SETUP)
    const result = await client.query({
      text: process.env.CLIENT_QUERY || 'select current_user',
      rowMode: 'array',
    })
    const encrypted = Boolean(client.connection.stream.encrypted)
    console.log(JSON.stringify({ user: result.rows[0][0], tls: encrypted }))
  } finally {
    await client.end().catch(() => {})
  }
}

main(process.argv[2]).catch((error) => {
  console.error(`${error.code || error.name}: ${error.message}`)
  process.exit(1)
})
