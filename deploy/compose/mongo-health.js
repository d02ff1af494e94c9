// docker-compose.yml's health check of MongoDB, as the root user (authentication is on):
// initiates the single-node replica set on first run, then reports whether it is healthy.
const fs = require("fs");
db.getSiblingDB("admin").auth(
  "root", fs.readFileSync("/run/secrets/mongo_root_password", "utf8").trim());
let ok = 0;
try {
  ok = rs.status().ok;
} catch (e) {
  ok = rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongo:27017" }] }).ok;
}
if (ok !== 1) {
  quit(1);
}
