package wire

import (
	"bytes"
	"strings"
	"testing"
)

// benchStanza is a typical report: a message with a body and a payload in
// its own namespace, one character reference.
const benchStanza = `<message to='collector.example.com' id='r-000123' type='normal' xml:lang='en'>` +
	`<body>temperature 21.5 &amp; humidity 40</body>` +
	`<report xmlns='urn:xcollect:report:1' device='dev-42' seq='123'>` +
	`<m name='temp' unit='C'>21.5</m><m name='hum' unit='%'>40</m><m name='co2' unit='ppm'>612</m></report>` +
	`<origin-id xmlns='urn:xmpp:sid:0' id='5f1c2a9e-3b7d-4e8a-9c61-0d2f4b8e7a13'/></message>`

// BenchmarkDecoderNext measures Decoder.Next per stanza on a stream of
// typical reports (the hot path of every c2s and component read loop).
func BenchmarkDecoderNext(b *testing.B) {
	const n = 1000
	in := []byte(header + strings.Repeat(benchStanza, n))
	b.SetBytes(int64(len(benchStanza)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		d := NewDecoder(bytes.NewReader(in), 1<<16)
		if _, err := d.Header(); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < n && i < b.N; j, i = j+1, i+1 {
			if _, err := d.Next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
