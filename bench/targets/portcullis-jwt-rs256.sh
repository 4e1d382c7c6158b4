# Portcullis with JWT RS256 bearer auth (JWKS, token cached): see portcullis-jwt.sh.
JWT_ALG=RS256 JWT_PORT=18107 JWT_ADMIN_PORT=18128
source "$BENCH/targets/portcullis-jwt.sh"
