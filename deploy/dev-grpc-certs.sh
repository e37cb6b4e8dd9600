#!/bin/sh
# Makes a development CA for internal gRPC and a certificate per identity, unless DIR has
# them already:
#   deploy/dev-grpc-certs.sh DIR [OWNER]
# DIR/<name>/{tls.crt,tls.key,ca.crt} for auth, users, orders (the services) and operator
# (a person with grpcurl), the layout of a Kubernetes TLS Secret (cert-manager's too). Each
# certificate names its identity as its DNS name and serves as TLS server and client. The
# CA key stays in DIR/ca/ to issue more. OWNER (uid:gid) is given the files, for containers
# running as another user. Development only: production certificates come from a real CA.
set -eu
dir=${1:?usage: dev-grpc-certs.sh DIR [OWNER]}
owner=${2:-}
if [ -f "$dir/ca/ca.crt" ]; then
  echo "dev-grpc-certs: development CA present in $dir"
  exit 0
fi
umask 077
mkdir -p "$dir/ca"
days=825
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/CN=tessera development gRPC CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.crt" 2>/dev/null
for name in auth users orders operator; do
  mkdir -p "$dir/$name"
  printf '%s\n' \
    "subjectAltName=DNS:$name" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" > "$dir/$name/ext.cnf"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name/tls.key" -out "$dir/$name/tls.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name/tls.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
    -CAcreateserial -days "$days" -extfile "$dir/$name/ext.cnf" \
    -out "$dir/$name/tls.crt" 2>/dev/null
  cp "$dir/ca/ca.crt" "$dir/$name/ca.crt"
  rm "$dir/$name/tls.csr" "$dir/$name/ext.cnf"
done
rm -f "$dir/ca/ca.srl"
# Readable by their owner only: certificates are public, but one mode is simpler to check.
chmod -R u=rwX,go= "$dir"
if [ -n "$owner" ]; then
  chown -R "$owner" "$dir"
fi
echo "dev-grpc-certs: made a development CA and certificates for auth, users, orders, operator in $dir"
