#!/bin/sh
# make-certs.sh DIR [--apply]
#
# The sidemesh injector's serving certificate without cert-manager. Writes into DIR a CA
# (ca.crt, ca.key; an existing pair in DIR is kept, so the webhook's caBundle survives a
# renewal) and a certificate for the injector's Service names signed by it (tls.crt,
# tls.key), valid for DAYS days (default 365). With --apply it then stores tls.crt/tls.key
# in the Secret sidemesh-injector-tls (the injector re-reads it when it changes) and puts
# ca.crt into both webhooks' caBundle, using kubectl's current context.
set -eu

usage() {
  echo "usage: $0 DIR [--apply]  (DAYS=N sets the certificate's validity, default 365)" >&2
  exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
dir=$1
apply=${2:-}
case $apply in "" | --apply) ;; *) usage ;; esac
days=${DAYS:-365}
case $days in '' | *[!0-9]*) echo "DAYS: expected a whole number of days, got '$days'" >&2; exit 2 ;; esac

namespace=sidemesh-system
service=sidemesh-injector
secret=sidemesh-injector-tls
webhook_config=sidemesh-injector
names="DNS:$service.$namespace.svc,DNS:$service.$namespace.svc.cluster.local"

umask 077  # the keys are for the owner only
mkdir -p "$dir"

cat > "$dir/openssl.cnf" <<CNF
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $names
authorityKeyIdentifier = keyid
CNF

if [ -s "$dir/ca.crt" ] && [ -s "$dir/ca.key" ]; then
  echo "keeping the CA in $dir/ca.crt"
else
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
    -days 1825 -subj "/CN=sidemesh-injector-ca" -config "$dir/openssl.cnf" -extensions ca \
    -keyout "$dir/ca.key" -out "$dir/ca.crt"
  echo "wrote a new CA: $dir/ca.crt"
fi

openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 \
  -subj "/CN=$service.$namespace.svc" -config "$dir/openssl.cnf" \
  -keyout "$dir/tls.key" -out "$dir/tls.csr"
openssl x509 -req -sha256 -days "$days" -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -extfile "$dir/openssl.cnf" -extensions server \
  -out "$dir/tls.crt"
rm -f "$dir/tls.csr"
echo "wrote $dir/tls.crt and $dir/tls.key for $service.$namespace.svc, valid $days days"

if [ "$apply" != --apply ]; then
  echo "not applied; rerun with --apply, or see docs/kubernetes.md for the kubectl commands"
  exit 0
fi

kubectl -n "$namespace" create secret tls "$secret" --cert="$dir/tls.crt" --key="$dir/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -
bundle=$(base64 < "$dir/ca.crt" | tr -d '\n')
kubectl patch mutatingwebhookconfiguration "$webhook_config" --type=json -p "[
  {\"op\": \"add\", \"path\": \"/webhooks/0/clientConfig/caBundle\", \"value\": \"$bundle\"},
  {\"op\": \"add\", \"path\": \"/webhooks/1/clientConfig/caBundle\", \"value\": \"$bundle\"}
]"
echo "applied: Secret $namespace/$secret and the caBundle of MutatingWebhookConfiguration $webhook_config"
