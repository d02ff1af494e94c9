// docker-compose.yml's MongoDB, first start only (docker-entrypoint-initdb.d, as root): the
// platform's own user, allowed to read and write its database and nothing else. The services
// connect as it (MONGODB_USERNAME, MONGODB_PASSWORD_FILE, authSource=hala).
const fs = require("fs");
const password = fs.readFileSync("/run/secrets/mongo_app_password", "utf8").trim();
db.getSiblingDB("hala").createUser({
  user: "hala",
  pwd: password,
  roles: [{ role: "readWrite", db: "hala" }],
});
