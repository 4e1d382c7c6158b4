#!/usr/bin/env python3
"""Writes a JWKS (one key, kid "bench") under OUT/www/.jwks/jwks.json and prints a token
signed with it: `jwt_fixture.py OUT ES256|RS256`. Needs pyjwt + cryptography (bench/setup.sh)."""
import json, os, sys, time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

out, alg = sys.argv[1], sys.argv[2]
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
token = jwt.encode({"sub": "agent1", "iss": "https://ids.bench", "aud": "bench", "iat": now, "exp": now + 86400},
                   key, algorithm=alg, headers={"kid": "bench"})
print(token)
