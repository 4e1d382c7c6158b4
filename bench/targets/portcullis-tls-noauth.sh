# Portcullis terminating TLS as a plain proxy (auth none), with the harness's certificate
# (RSA-2048 by default; CERT_KEY_TYPE=ec for P-256): compare with nginx-tls / haproxy-tls.
source "$BENCH/targets/portcullis.sh"
DESC="Portcullis plain proxy with TLS termination (auth none)"
H1_URL="https://$HOST:18205"
H2_URL="https://$HOST:18205"
AUTH=0
prepare() {
  make_certs
  portcullis_config "$RUN/portcullis-tls-noauth" "[[listener]]
name = \"https\"
address = \"$HOST:18205\"
tls = true
[tls]
cert = \"$RUN/certs/cert.pem\"
key = \"$RUN/certs/key.pem\""
  sed -i 's/^auth = "basic"/auth = "none"/; s/^address = "127.0.0.1:18124"/address = "127.0.0.1:18126"/' "$RUN/portcullis-tls-noauth/portcullis.toml"
  CMD=("${PORTCULLIS_BIN:-$PWD/target/release/portcullis}" serve --config "$RUN/portcullis-tls-noauth/portcullis.toml")
}
