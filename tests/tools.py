"""The Debian tools some tests drive, found or named with the command that installs
them: a missing tool fails its test with that command (as `.ci/run` installs them all),
never skips it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

PACKAGES = {
    "nginx": "nginx",
    "haproxy": "haproxy",
    "curl": "curl",
    "swaks": "swaks",
    "systemd-analyze": "systemd",
    "systemd-sysusers": "systemd",
    "pipx": "pipx",
    "postfix": "postfix",
    "dnsmasq": "dnsmasq",
    "opendkim": "opendkim",
}
"""Each tool's Debian package."""
SWAKS_TLS_MODULES = ("Net::SSLeay", "IO::Socket::SSL")
SWAKS_TLS_PACKAGES = "libnet-ssleay-perl libio-socket-ssl-perl"


def need(tool: str) -> str:
    """The path of `tool` (also looked for in /usr/sbin, which a user's PATH may lack);
    the test fails, saying how to install it, when it is missing."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"{tool} is needed by this test: `apt-get install {PACKAGES[tool]}` "
            "(.ci/run installs every tool the tests use)",
            pytrace=False,
        )
    return found


def need_swaks_with_tls() -> str:
    """swaks, and the Perl modules its --tls needs (Debian's swaks only suggests them)."""
    swaks = need("swaks")
    modules = [f"-M{module}" for module in SWAKS_TLS_MODULES]
    if subprocess.run(["perl", *modules, "-e", "1"], capture_output=True, check=False).returncode:
        pytest.fail(
            f"swaks --tls needs Perl's {' and '.join(SWAKS_TLS_MODULES)}: "
            f"`apt-get install {SWAKS_TLS_PACKAGES}`",
            pytrace=False,
        )
    return swaks
