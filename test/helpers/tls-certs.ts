/**
 * A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it, made by the
 * real openssl binary (argument arrays, no shell) in `dir`. P-256 keys: a few ms each, where
 * RSA 2048 costs ~100 ms.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { need } from './prereq';

export const OPENSSL = '/usr/bin/openssl';

export interface TestPki {
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** A second key that matches no certificate here. */
  otherKey: string;
}

export function makeTestPki(dir: string): TestPki {
  need(fs.existsSync(OPENSSL), `${OPENSSL} (Debian package openssl)`);
  const p = (name: string): string => path.join(dir, name);
  fs.writeFileSync(p('openssl.cnf'), ['[req]', 'distinguished_name=dn', '[dn]', '[v3_ca]', 'basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign', 'subjectKeyIdentifier=hash', ''].join('\n'));
  // Go (Prometheus) checks the SAN, never the CN.
  fs.writeFileSync(p('server.ext'), ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost', ''].join('\n'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (args: string[]): void => {
    execFileSync(OPENSSL, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  run(['req', '-x509', '-new', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=cgwatchdog test CA', '-config', p('openssl.cnf'), '-extensions', 'v3_ca']);
  run(['req', '-new', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1', '-config', p('openssl.cnf')]);
  run(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-set_serial', `0x${Date.now().toString(16)}`, '-days', '2', '-out', p('server.crt'), '-extfile', p('server.ext')]);
  run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', p('other.key')]);
  return { caCert: p('ca.crt'), serverCert: p('server.crt'), serverKey: p('server.key'), otherKey: p('other.key') };
}
