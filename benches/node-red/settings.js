// Node-RED for benches/webhook-load.sh: http in → keyword function → SQLite insert → response.
// The database handle is shared with the function node through the global context.
const path = require("path");
const Database = require("better-sqlite3");

const db = new Database(process.env.NR_DB || path.join(__dirname, ".user", "nodered.db"));
// The same durability trade-off as Switchyard's SQLite store: WAL, synchronous NORMAL.
db.pragma("journal_mode = WAL");
db.pragma("synchronous = NORMAL");
db.exec(
  "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, wamid TEXT UNIQUE, sender TEXT, body TEXT, intent TEXT, received_at INTEGER)"
);

module.exports = {
  uiPort: Number(process.env.NR_PORT || 1880),
  uiHost: "127.0.0.1",
  userDir: path.join(__dirname, ".user"),
  flowFile: path.join(__dirname, "flows.json"),
  credentialSecret: false,
  httpAdminRoot: false,
  functionGlobalContext: { db },
  logging: { console: { level: "warn", metrics: false, audit: false } },
};
