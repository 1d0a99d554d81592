// Command peer is a TLS peer for trustwatch's end-to-end tests, standard library only.
//
// It reproduces what KubeEdge's CloudCore (cloudhub, certsvc) and EdgeCore do with crypto/tls:
//
//	peer server -listen 127.0.0.1:10000 -cert s.pem -key s.key -client-ca ca.pem [flags]
//	peer client -connect 127.0.0.1:10000 -ca ca.pem [-cert c.pem -key c.key] [flags]
//
// Both print one JSON object per line on stdout (ground truth for the tests): the server one per
// accepted connection, the client one per attempt.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: peer server|client [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		os.Exit(1)
	}
}

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(v map[string]any) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(v)
}

func parseVersion(s string) (uint16, error) {
	switch s {
	case "", "0":
		return 0, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("bad TLS version %q (want 1.2 or 1.3)", s)
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func loadPool(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s: no certificates", path)
	}
	return pool, nil
}

func firstDER(path string) ([]byte, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return block.Bytes, nil
}

// setMSS returns a Dialer/ListenConfig Control func that clamps the TCP MSS (0: leave as is).
func setMSS(mss int) func(network, address string, c syscall.RawConn) error {
	if mss <= 0 {
		return nil
	}
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, mss)
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// identity is one server configuration: its certificate and the CA it trusts for clients.
type identity struct {
	cert     tls.Certificate
	clientCA *x509.CertPool
	caPath   string
}

func loadIdentity(cert, key, clientCA string) (*identity, error) {
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	id := &identity{cert: kp, caPath: clientCA}
	if clientCA != "" {
		if id.clientCA, err = loadPool(clientCA); err != nil {
			return nil, err
		}
	}
	return id, nil
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:10000", "address to listen on")
	certF := fs.String("cert", "", "server certificate chain PEM (leaf first)")
	keyF := fs.String("key", "", "server private key PEM")
	caF := fs.String("client-ca", "", "CA bundle PEM that verifies client certificates (also served as /ca.crt)")
	noClientAuth := fs.Bool("no-client-auth", false, "do not request client certificates")
	minV := fs.String("min", "1.2", "minimum TLS version (1.2|1.3)")
	maxV := fs.String("max", "", "maximum TLS version (1.2|1.3, empty: library default)")
	suites := fs.String("suites", "cloudcore", "TLS 1.2 cipher suites: cloudcore (ECDHE-ECDSA AES-256-GCM only), ecdsa (all ECDHE-ECDSA AEAD), default")
	n := fs.Int("n", 0, "exit after N connections (0: serve until killed)")
	cert2 := fs.String("cert2", "", "second identity: certificate chain PEM")
	key2 := fs.String("key2", "", "second identity: private key PEM")
	ca2 := fs.String("client-ca2", "", "second identity: client CA bundle PEM")
	switchAfter := fs.Int("switch-after", 0, "switch to the second identity after N connections (0: only on SIGHUP)")
	switchAt := fs.Duration("switch-at", 0, "switch to the second identity this long after start (0: never)")
	certsvc := fs.Bool("certsvc", false, "cert-service mode: HTTPS, no client certificate, GET /ca.crt returns the client CA's DER")
	reply := fs.String("reply", "pong\n", "bytes written to each client after reading its first bytes")
	tickets := fs.Bool("tickets", true, "issue session tickets (resumption)")
	writeChunk := fs.Int("write-chunk", 0, "write at most N bytes per TCP write, pausing 300µs after each, so flights leave in many segments even on lo (GSO) (0: off)")
	_ = fs.Parse(args)

	minVer, err := parseVersion(*minV)
	if err != nil {
		return err
	}
	maxVer, err := parseVersion(*maxV)
	if err != nil {
		return err
	}
	first, err := loadIdentity(*certF, *keyF, *caF)
	if err != nil {
		return err
	}
	var second *identity
	if *cert2 != "" {
		if second, err = loadIdentity(*cert2, *key2, *ca2); err != nil {
			return err
		}
	}
	var current atomic.Pointer[identity]
	current.Store(first)
	switchNow := func(reason string) {
		if second != nil && current.Load() != second {
			current.Store(second)
			emit(map[string]any{"event": "switch", "reason": reason})
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			switchNow("sighup")
		}
	}()
	if *switchAt > 0 {
		time.AfterFunc(*switchAt, func() { switchNow("timer") })
	}

	var suiteList []uint16
	switch *suites {
	case "cloudcore":
		suiteList = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	case "ecdsa":
		suiteList = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	case "default":
	default:
		return fmt.Errorf("bad -suites %q", *suites)
	}
	base := &tls.Config{
		MinVersion:             minVer,
		MaxVersion:             maxVer,
		CipherSuites:           suiteList,
		SessionTicketsDisabled: !*tickets,
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		id := current.Load()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{id.cert}
		if !*noClientAuth && !*certsvc {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = id.clientCA
		}
		return c, nil
	}
	// One ticket key for every identity, so resumption survives GetConfigForClient clones.
	var key [32]byte
	copy(key[:], "trustwatch-test-ticket-key-00001")
	base.SetSessionTicketKeys([][32]byte{key})

	lc := net.ListenConfig{}
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		return err
	}
	emit(map[string]any{"event": "listening", "addr": ln.Addr().String()})

	if *certsvc {
		return serveCertsvc(ln, base, &current, *n)
	}
	var count int
	var wg sync.WaitGroup
	for *n == 0 || count < *n {
		raw, err := ln.Accept()
		if err != nil {
			return err
		}
		count++
		idx := count
		if *switchAfter > 0 && count > *switchAfter {
			switchNow("after_n")
		}
		if *writeChunk > 0 {
			raw = &chunkConn{Conn: raw, n: *writeChunk}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			handle(raw, base, idx, *reply)
		}()
	}
	wg.Wait()
	return nil
}

func handle(raw net.Conn, cfg *tls.Config, idx int, reply string) {
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Server(raw, cfg)
	rec := map[string]any{"event": "conn", "n": idx, "remote": raw.RemoteAddr().String()}
	err := conn.Handshake()
	if err == nil {
		st := conn.ConnectionState()
		rec["version"] = versionName(st.Version)
		rec["resumed"] = st.DidResume
		rec["cipher"] = tls.CipherSuiteName(st.CipherSuite)
		rec["client_certs"] = len(st.PeerCertificates)
		buf := make([]byte, 64)
		var k int
		k, err = conn.Read(buf)
		// Read may return data together with io.EOF when a close_notify follows it.
		if k > 0 {
			_, err = io.WriteString(conn, reply)
		}
	}
	rec["ok"] = err == nil
	if err != nil {
		rec["error"] = err.Error()
	}
	_ = conn.Close()
	emit(rec)
}

func serveCertsvc(ln net.Listener, cfg *tls.Config, current *atomic.Pointer[identity], n int) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/ca.crt", func(w http.ResponseWriter, r *http.Request) {
		der, err := firstDER(current.Load().caPath)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(der)
	})
	var count atomic.Int64
	done := make(chan struct{})
	srv := &http.Server{Handler: mux, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			if n > 0 && count.Add(1) >= int64(n) {
				select {
				case <-done:
				default:
					close(done)
				}
			}
		}
	}}
	go func() {
		<-done
		_ = srv.Close()
	}()
	err := srv.Serve(tls.NewListener(ln, cfg))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	connect := fs.String("connect", "127.0.0.1:10000", "server address")
	local := fs.String("local", "", "local IP to bind (e.g. 127.0.0.5)")
	certF := fs.String("cert", "", "client certificate chain PEM (empty: no client certificate)")
	keyF := fs.String("key", "", "client private key PEM")
	caF := fs.String("ca", "", "root CA bundle PEM that verifies the server")
	serverName := fs.String("server-name", "", "SNI and name to verify (empty: host of -connect)")
	minV := fs.String("min", "1.2", "minimum TLS version")
	maxV := fs.String("max", "", "maximum TLS version (1.2|1.3)")
	n := fs.Int("n", 1, "number of attempts")
	interval := fs.Duration("interval", 0, "pause between attempts")
	mss := fs.Int("mss", 0, "clamp the TCP MSS of the client socket (0: leave)")
	resume := fs.Bool("resume", false, "keep a session cache across attempts (resumption)")
	get := fs.String("get", "", "send an HTTP GET for this path (certsvc) instead of ping; prints the body's sha256")
	timeout := fs.Duration("timeout", 5*time.Second, "per-attempt timeout")
	_ = fs.Parse(args)

	minVer, err := parseVersion(*minV)
	if err != nil {
		return err
	}
	maxVer, err := parseVersion(*maxV)
	if err != nil {
		return err
	}
	cfg := &tls.Config{MinVersion: minVer, MaxVersion: maxVer, ServerName: *serverName}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(*connect)
		if err != nil {
			return err
		}
		cfg.ServerName = host
	}
	if *caF != "" {
		if cfg.RootCAs, err = loadPool(*caF); err != nil {
			return err
		}
	}
	if *certF != "" {
		kp, err := tls.LoadX509KeyPair(*certF, *keyF)
		if err != nil {
			return err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	if *resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	}
	dialer := &net.Dialer{Timeout: *timeout, Control: setMSS(*mss)}
	if *local != "" {
		ip := net.ParseIP(*local)
		if ip == nil {
			return fmt.Errorf("bad -local %q", *local)
		}
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	for i := 1; i <= *n; i++ {
		if i > 1 && *interval > 0 {
			time.Sleep(*interval)
		}
		emit(attempt(i, dialer, cfg, *connect, *get, *timeout))
	}
	return nil
}

func attempt(i int, dialer *net.Dialer, cfg *tls.Config, addr, get string, timeout time.Duration) map[string]any {
	rec := map[string]any{"attempt": i, "ok": false, "handshake_ok": false}
	raw, err := dialer.Dial("tcp", addr)
	if err != nil {
		rec["error"] = err.Error()
		rec["stage"] = "dial"
		return rec
	}
	defer raw.Close()
	rec["local"] = raw.LocalAddr().String()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		rec["error"] = err.Error()
		rec["stage"] = "handshake"
		return rec
	}
	rec["handshake_ok"] = true
	st := conn.ConnectionState()
	rec["version"] = versionName(st.Version)
	rec["resumed"] = st.DidResume
	rec["cipher"] = tls.CipherSuiteName(st.CipherSuite)
	if get != "" {
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", get, cfg.ServerName)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			rec["error"] = err.Error()
			rec["stage"] = "http"
			return rec
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			rec["error"] = err.Error()
			rec["stage"] = "http"
			return rec
		}
		rec["status"] = resp.StatusCode
		rec["body_sha256"] = sha256Hex(body)
	} else {
		if _, err := io.WriteString(conn, "ping\n"); err != nil {
			rec["error"] = err.Error()
			rec["stage"] = "write"
			return rec
		}
		buf := make([]byte, 64)
		// In TLS 1.3 the server verifies the client certificate after the client's handshake is
		// done: its rejection arrives here, as an alert.
		// Read may return the answer together with io.EOF when the server's close_notify
		// follows it: only a read without data is a failure.
		if k, err := conn.Read(buf); k == 0 && err != nil {
			rec["error"] = err.Error()
			rec["stage"] = "read"
			return rec
		}
	}
	_ = conn.Close()
	rec["ok"] = true
	return rec
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// chunkConn writes at most n bytes per TCP write (TCP_NODELAY is Go's default), pausing after
// each, so one TLS flight leaves in many segments.
type chunkConn struct {
	net.Conn
	n int
}

func (c *chunkConn) Write(b []byte) (int, error) {
	var done int
	for done < len(b) {
		end := min(done+c.n, len(b))
		k, err := c.Conn.Write(b[done:end])
		done += k
		if err != nil {
			return done, err
		}
		time.Sleep(300 * time.Microsecond)
	}
	return done, nil
}
