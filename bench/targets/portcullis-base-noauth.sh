# A second Portcullis binary (PORTCULLIS_BASE_BIN, e.g. the build before a change) as a plain
# proxy (no auth), so before and after are measured in one interleaved run.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis BASE build, plain proxy (auth none)"
H1_URL="http://$HOST:18109"
H2_URL="http://$HOST:18109"
AUTH=0
prepare() {
  [ -x "${PORTCULLIS_BASE_BIN:-}" ] || die "set PORTCULLIS_BASE_BIN to the binary to compare against"
  portcullis_config "$RUN/portcullis-base-noauth" "[[listener]]
name = \"http\"
address = \"$HOST:18109\"
tls = false"
  sed -i 's/^auth = "basic"/auth = "none"/; s/^address = "127.0.0.1:18124"/address = "127.0.0.1:18130"/' "$RUN/portcullis-base-noauth/portcullis.toml"
  CMD=("$PORTCULLIS_BASE_BIN" serve --config "$RUN/portcullis-base-noauth/portcullis.toml")
}
