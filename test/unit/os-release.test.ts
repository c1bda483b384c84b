import test from 'node:test';
import assert from 'node:assert/strict';
import { parseOsRelease } from '../../src/kernel/os-release';

// Real files: Debian 12 (this host), Ubuntu 24.04, and a minimal one with NAME only.
const DEBIAN = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
`;
const UBUNTU = `PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
ID=ubuntu
ID_LIKE=debian
`;

test('os-release: PRETTY_NAME, else NAME and VERSION_ID; quotes and escapes as os-release(5) says', () => {
  assert.equal(parseOsRelease(DEBIAN), 'Debian GNU/Linux 12 (bookworm)');
  assert.equal(parseOsRelease(UBUNTU), 'Ubuntu 24.04.1 LTS');
  assert.equal(parseOsRelease('NAME=Alpine\nVERSION_ID=3.20.3\n'), 'Alpine 3.20.3');
  assert.equal(parseOsRelease("NAME='Flat car'\n"), 'Flat car');
  assert.equal(parseOsRelease('PRETTY_NAME="say \\"hi\\""\n'), 'say "hi"');
  assert.equal(parseOsRelease('# nothing\n\ngarbage line\n'), undefined);
});
