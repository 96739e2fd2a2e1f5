"""What can go wrong with a BMC, as one operator sentence each.

Sorted by what the caller should do (MAAS's ``IPMI_ERRORS`` idea): a
``retryable`` error may pass if the same action is tried again after a pause
(a lost packet, a busy BMC); every other error needs the operator first (a
wrong password, a bad setting, a feature the BMC lacks), and retrying it would
only lock the account or hide the cause.

Every template names the BMC (``{bmc}``, ``ADDR:PORT``) and, when known, the
node.  No template has a password field; :func:`redact` removes one that a
library echoed back in its own message.
"""

from rackforge.errors import ConfigError, RackforgeError


class BMCError(RackforgeError):
    """Base of every BMC error; ``bmc`` is ``ADDR:PORT`` (or a node name)."""

    message = "BMC {bmc}: {detail}"


class BMCUnreachable(BMCError):
    message = ("BMC {bmc} does not answer ({detail}): check its address and port, its "
               "network cable and that {protocol} is enabled on it")
    retryable = True


class BMCTimeout(BMCError):
    message = ("BMC {bmc} did not finish '{action}' within {seconds:g} s: it is slow or "
               "dropping packets; try again with a longer --timeout or check its network")
    retryable = True


class BMCAuthFailed(BMCError):
    message = ("BMC {bmc} refused user '{user}' ({detail}): check the user name and the "
               "password file; not retried, so that the BMC does not lock the account")


class BMCBusy(BMCError):
    message = "BMC {bmc} is busy ({detail}); try again in a minute"
    retryable = True


class BMCCommandFailed(BMCError):
    message = "BMC {bmc} failed '{action}': {detail}"
    retryable = True


class BMCUnsupported(BMCError):
    message = ("BMC {bmc} does not support '{action}' ({detail}); do it from the BMC's "
               "own interface or use another driver")


class PowerStateNotReached(BMCError):
    message = ("BMC {bmc} accepted 'power {action}' but the node is still {actual} after "
               "{seconds:g} s; check the node's power supply and the BMC's event log")
    retryable = True


class BMCConfigError(ConfigError):
    """A setting of the command or of a node's BMC record is wrong."""

    message = "{detail}"


class MissingSetting(BMCConfigError):
    message = "{driver} driver needs '{setting}' ({help}); add it and run again"


class InvalidSetting(BMCConfigError):
    message = "{driver} driver setting '{setting}' = '{value}' is not valid: {why}"


class UnknownDriver(BMCConfigError):
    message = "unknown BMC driver '{name}': the known drivers are {known}"


class InsecureRefused(BMCConfigError):
    message = ("refusing {what} for BMC {bmc}: it lets anyone on the BMC network in; "
               "set a password, or pass --insecure if this is a lab")


class PasswordMissing(BMCConfigError):
    message = ("no BMC password: give --password-file FILE, --password-env VARIABLE "
               "(default RACKFORGE_BMC_PASSWORD) or --password-prompt")


class PasswordFileError(BMCConfigError):
    message = "cannot read the BMC password file {path}: {why}"


class ClusterKeyError(RackforgeError):
    message = "cluster key {path}: {why}"


class CredentialDecryptError(RackforgeError):
    message = ("the BMC password of {node} cannot be decrypted with the cluster key {path}: "
               "the key changed or the record is damaged; enroll the node again")


class DiscoveryError(BMCConfigError):
    message = "bad address range '{value}': {why} (expected FIRST-LAST, e.g. 10.0.0.10-10.0.0.40)"


def redact(text, secrets):
    """``text`` with every non-empty secret of ``secrets`` replaced by ``***``."""
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
