# Portcullis plain proxy (auth none) starting with BANS (100,000) active bans of other sources:
# the cost of the ban check on the hot path, compared with portcullis-noauth in the same run.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis plain proxy with ${BANS:-100000} active bans"
H1_URL="http://$HOST:18108"
H2_URL="http://$HOST:18108"
AUTH=0
prepare() {
  portcullis_config "$RUN/portcullis-bans" "[[listener]]
name = \"http\"
address = \"$HOST:18108\"
tls = false"
  sed -i 's/^auth = "basic"/auth = "none"/; s/^address = "127.0.0.1:18124"/address = "127.0.0.1:18129"/' "$RUN/portcullis-bans/portcullis.toml"
  "${PRELOAD_BIN:-$PWD/target/release/examples/preload_bans}" "$RUN/portcullis-bans/state" "${BANS:-100000}" "${BANS_BASE:-10.0.0.0}" >&2
  CMD=("${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$RUN/portcullis-bans/portcullis.toml")
}
