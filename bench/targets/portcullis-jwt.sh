# Portcullis with JWT bearer auth (ES256 by default; JWT_ALG=RS256), keys from a JWKS the
# edge serves itself from a static service (so no extra process), token cached after first use.
source "$BENCH/targets/portcullis.sh"
JWT_ALG="${JWT_ALG:-ES256}"
DESC="Portcullis, JWT $JWT_ALG bearer (JWKS, token cached)"
H1_URL="http://$HOST:${JWT_PORT:-18106}"
H2_URL="http://$HOST:${JWT_PORT:-18106}"
AUTH=0
READY_PATH="/.jwks/jwks.json"
prepare() {
  local dir="$RUN/portcullis-jwt-$JWT_ALG"
  portcullis_config "$dir" "[[listener]]
name = \"http\"
address = \"$HOST:${JWT_PORT:-18106}\"
tls = false"
  AUTH_HEADER="Bearer $(python3 "$BENCH/lib/jwt_fixture.py" "$dir" "$JWT_ALG" ${JWT_TOKENS:-})"   # JWT_TOKENS=N: also $dir/tokens.txt
  TOKENS_FILE="$dir/tokens.txt"
  sed -i "s/^auth = \"basic\"/auth = \"jwt\"/; s/^address = \"127.0.0.1:18124\"/address = \"127.0.0.1:${JWT_ADMIN_PORT:-18127}\"/" "$dir/portcullis.toml"
  cat >> "$dir/portcullis.toml" <<EOC
[auth.jwt]
jwks_url = "http://$HOST:${JWT_PORT:-18106}/.jwks/jwks.json"
issuer = "https://ids.bench"
audience = "bench"
[[service]]
name = "jwks"
static_dir = "$dir/www"
[[route]]
path = "/.jwks/"
service = "jwks"
EOC
  CMD=("${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$dir/portcullis.toml")
}
