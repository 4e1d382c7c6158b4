# Portcullis as a plain proxy (no auth) on tokio's work-stealing runtime
# (`server.runtime = "work-stealing"`): compare with the default per-core workers
# (portcullis-noauth) in one run.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis plain proxy (auth none), work-stealing runtime"
H1_URL="http://$HOST:18114"
H2_URL="http://$HOST:18114"
AUTH=0
prepare() {
  portcullis_config "$RUN/portcullis-stealing-noauth" "[[listener]]
name = \"http\"
address = \"$HOST:18114\"
tls = false"
  sed -i 's/^auth = "basic"/auth = "none"/; s/^address = "127.0.0.1:18124"/address = "127.0.0.1:18131"/; s/^\[server\]$/[server]\nruntime = "work-stealing"/' \
    "$RUN/portcullis-stealing-noauth/portcullis.toml"
  CMD=("${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$RUN/portcullis-stealing-noauth/portcullis.toml")
}
