# Sourced by bench/ship.sh and bench/ship-faults.sh: the log-shipping benches' PKI in the
# current directory — a CA (ca.pem), the receiver's certificate for localhost (server.pem,
# server.key) and the senders' client certificate for edge1.example.com (client.pem,
# client.key); and free_port, a free loopback TCP port.
ec() { openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$1"; }
ec ca.key; openssl req -x509 -new -key ca.key -subj /CN=bench-ca -days 2 -out ca.pem 2>/dev/null
leaf() { # name cn eku
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=%s\n' "$2" "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf server localhost serverAuth
leaf client edge1.example.com clientAuth

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
