package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// keyPair is a certificate with its private key, both also kept PEM-encoded.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte // PKCS#8 ("PRIVATE KEY"): read by Go, rustls, OpenSSL alike
}

// newKey makes an ECDSA P-256 key: fast to generate and accepted by kube-apiserver, kubectl,
// rustls and OpenSSL.
func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serialNumber() (*big.Int, error) {
	// 127 random bits: positive, and well under the 20 octets RFC 5280 allows.
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encodeKeyPair(der []byte, key crypto.Signer) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}, nil
}

// newCA makes a self-signed certificate authority (it signs only leaf certificates).
func newCA(commonName string, now time.Time) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"lockheed test control plane"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	return encodeKeyPair(der, key)
}

// newLeaf makes an end-entity certificate signed by ca. It is never a CA itself, as rustls
// (webpki) rejects a CA certificate presented as the end-entity certificate.
func newLeaf(ca *keyPair, subject pkix.Name, usage x509.ExtKeyUsage, dnsNames []string, ips []net.IP, now time.Time) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	return encodeKeyPair(der, key)
}

// user is one identity the control plane knows, authenticated by a client certificate.
type user struct {
	Name   string   // certificate CN: the Kubernetes user name
	Groups []string // certificate O: the Kubernetes groups
	EnvVar string   // environment variable that names its kubeconfig
}

var users = []user{
	{Name: "admin", Groups: []string{"system:masters"}, EnvVar: "LOCKHEED_KUBECONFIG_ADMIN"},
	{Name: "alice", EnvVar: "LOCKHEED_KUBECONFIG_ALICE"},
	{Name: "bob", EnvVar: "LOCKHEED_KUBECONFIG_BOB"},
	{Name: "carol", EnvVar: "LOCKHEED_KUBECONFIG_CAROL"},
	{Name: "dave", EnvVar: "LOCKHEED_KUBECONFIG_DAVE"},
}

// pki holds every file path the components and clients need.
type pki struct {
	dir            string
	serverCA       *keyPair // signs the serving certificate; clients trust it
	clientCA       *keyPair // signs the user certificates; kube-apiserver trusts it
	serverCAFile   string
	servingCert    string
	servingKey     string
	clientCAFile   string
	saPublicKey    string
	saSigningKey   string
	userCerts      map[string]*keyPair
	kubeconfigPath map[string]string
}

type fileData struct {
	path string
	data []byte
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	return os.WriteFile(path, data, mode)
}

// makePKI generates two test CAs, the kube-apiserver serving certificate (IP SAN 127.0.0.1,
// DNS SAN localhost), the service-account key pair and one client certificate per user.
func makePKI(stateDir string) (*pki, error) {
	now := time.Now()
	p := &pki{dir: filepath.Join(stateDir, "pki"), userCerts: map[string]*keyPair{}, kubeconfigPath: map[string]string{}}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if p.serverCA, err = newCA("lockheed-test-server-ca", now); err != nil {
		return nil, err
	}
	if p.clientCA, err = newCA("lockheed-test-client-ca", now); err != nil {
		return nil, err
	}
	serving, err := newLeaf(p.serverCA, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}, now)
	if err != nil {
		return nil, err
	}
	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saPriv, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	p.serverCAFile = filepath.Join(p.dir, "server-ca.crt")
	p.servingCert = filepath.Join(p.dir, "apiserver.crt")
	p.servingKey = filepath.Join(p.dir, "apiserver.key")
	p.clientCAFile = filepath.Join(p.dir, "client-ca.crt")
	p.saPublicKey = filepath.Join(p.dir, "service-account.pub")
	p.saSigningKey = filepath.Join(p.dir, "service-account.key")
	files := []fileData{
		{p.serverCAFile, p.serverCA.certPEM},
		{filepath.Join(p.dir, "server-ca.key"), p.serverCA.keyPEM},
		{p.clientCAFile, p.clientCA.certPEM},
		{filepath.Join(p.dir, "client-ca.key"), p.clientCA.keyPEM},
		{p.servingCert, serving.certPEM},
		{p.servingKey, serving.keyPEM},
		{p.saPublicKey, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub})},
		{p.saSigningKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saPriv})},
	}
	for _, u := range users {
		kp, err := newLeaf(p.clientCA, pkix.Name{CommonName: u.Name, Organization: u.Groups}, x509.ExtKeyUsageClientAuth, nil, nil, now)
		if err != nil {
			return nil, err
		}
		p.userCerts[u.Name] = kp
		files = append(files,
			fileData{filepath.Join(p.dir, u.Name+".crt"), kp.certPEM},
			fileData{filepath.Join(p.dir, u.Name+".key"), kp.keyPEM})
	}
	for _, f := range files {
		if err := writeFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeKubeconfigs writes one self-contained kubeconfig per user (all data inline).
func (p *pki) writeKubeconfigs(stateDir, server string) error {
	b64 := base64.StdEncoding.EncodeToString
	for _, u := range users {
		kp := p.userCerts[u.Name]
		var sb strings.Builder
		fmt.Fprintf(&sb, `apiVersion: v1
kind: Config
clusters:
- name: lockheed
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: lockheed-%s
  context:
    cluster: lockheed
    user: %s
    namespace: default
current-context: lockheed-%s
preferences: {}
`, server, b64(p.serverCA.certPEM), u.Name, b64(kp.certPEM), b64(kp.keyPEM), u.Name, u.Name, u.Name)
		path := filepath.Join(stateDir, u.Name+".kubeconfig")
		if err := writeFile(path, []byte(sb.String()), 0o600); err != nil {
			return err
		}
		p.kubeconfigPath[u.Name] = path
	}
	return nil
}
