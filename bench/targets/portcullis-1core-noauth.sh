# Portcullis as a plain proxy (no auth) held to one core (ONE_CORE, default 0) inside the
# proxy's CPU set: with PROXY_CPUS=0,1 this is the 1-core row of the scaling factor, measured
# in the same run as the 2-core portcullis-noauth. One core: one current-thread runtime.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis plain proxy (auth none), one core"
H1_URL="http://$HOST:18115"
H2_URL="http://$HOST:18115"
AUTH=0
prepare() {
  portcullis_config "$RUN/portcullis-1core-noauth" "[[listener]]
name = \"http\"
address = \"$HOST:18115\"
tls = false"
  sed -i 's/^auth = "basic"/auth = "none"/; s/^address = "127.0.0.1:18124"/address = "127.0.0.1:18132"/' "$RUN/portcullis-1core-noauth/portcullis.toml"
  CMD=(taskset -c "${ONE_CORE:-0}" "${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$RUN/portcullis-1core-noauth/portcullis.toml")
}
