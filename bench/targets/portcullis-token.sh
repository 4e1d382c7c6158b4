# Portcullis with an edge access token (`Authorization: Bearer pca_…`), minted once from the
# Basic credential at POST /portcullis/token after the edge started: the third authenticated
# path beside Basic (portcullis) and JWT (portcullis-jwt), against portcullis-noauth.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis, edge access token (pca_, minted from Basic)"
H1_URL="http://$HOST:18116"
H2_URL="http://$HOST:18116"
AUTH=0
prepare() {
  portcullis_config "$RUN/portcullis-token" "[[listener]]
name = \"http\"
address = \"$HOST:18116\"
tls = false"
  sed -i 's/^address = "127.0.0.1:18124"/address = "127.0.0.1:18133"/' "$RUN/portcullis-token/portcullis.toml"
  CMD=("${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$RUN/portcullis-token/portcullis.toml")
}
after_start() {
  local answer
  answer=$(curl -fsS -X POST -H "Authorization: $GOOD_AUTH" "$H1_URL/portcullis/token") || return 1
  AUTH_HEADER="Bearer $(python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' <<< "$answer")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: $AUTH_HEADER" "$H1_URL/")" = 200 ]
}
