#!/usr/bin/env python3
"""Writes a JWKS (one key, kid "bench") under OUT/www/.jwks/jwks.json and prints a token
signed with it: `jwt_fixture.py OUT ES256|RS256 [N]`. With N, also writes N distinct tokens
(unique `jti`), one per line, to OUT/tokens.txt — for the uncached-verification benchmark,
where every request must carry a token the edge has never seen. Signing runs on every core.
Needs pyjwt + cryptography (bench/setup.sh)."""
import json, multiprocessing, os, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

KEY_PEM = None


def sign_range(args):
    alg, start, count, now = args
    key = serialization.load_pem_private_key(KEY_PEM, password=None)
    claims = {"sub": "agent1", "iss": "https://ids.bench", "aud": "bench", "iat": now, "exp": now + 86400}
    return [jwt.encode(dict(claims, jti=str(i)), key, algorithm=alg, headers={"kid": "bench"}) for i in range(start, start + count)]


def main():
    global KEY_PEM
    out, alg = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        public = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": "bench", "alg": alg, "use": "sig"})
    os.makedirs(f"{out}/www/.jwks", exist_ok=True)
    with open(f"{out}/www/.jwks/jwks.json", "w") as f:
        json.dump({"keys": [public]}, f)
    now = int(time.time())
    KEY_PEM = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if n:
        workers = os.cpu_count() or 1
        chunk = (n + workers * 8 - 1) // (workers * 8)
        jobs = [(alg, s, min(chunk, n - s), now) for s in range(0, n, chunk)]
        with multiprocessing.get_context("fork").Pool(workers) as pool, open(f"{out}/tokens.txt", "w") as f:
            for tokens in pool.imap(sign_range, jobs):
                f.write("\n".join(tokens) + "\n")
    print(sign_range((alg, -1, 1, now))[0])


if __name__ == "__main__":
    main()
