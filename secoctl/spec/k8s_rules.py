"""The API server's and kubelet's own rules for the values a spec hands to Kubernetes, ported as written.

Sources (Kubernetes v1.36.3, the release tests/cluster runs): k8s.io/apimachinery
pkg/api/validate/content (DNS names, label keys and values), pkg/api/resource (quantities),
k8s.io/kubernetes pkg/apis/core/validation (tolerations, requests), and github.com/distribution/reference
v0.6.0 with opencontainers/go-digest (image references, as the kubelet parses them before a pull).
Each function returns the problems as apimachinery does (empty when valid), so a caller words the fix.
Go's `^...$` matches the whole string only, hence `fullmatch` throughout.
"""

from __future__ import annotations

import re
from decimal import Decimal

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_DNS1123_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
DNS1035_LABEL = re.compile("[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_NAME = re.compile("([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _too_long(value: str, limit: int) -> list[str]:
    return [f"must be no more than {limit} characters"] if len(value) > limit else []


def _matching(value: str, limit: int, pattern: re.Pattern, message: str) -> list[str]:
    return _too_long(value, limit) + ([] if pattern.fullmatch(value) else [message])


def dns1123_label(value: str) -> list[str]:
    """Names of pods' hostnames and subdomains, Indexed Job pods (`NAME-INDEX`), containers."""
    return _matching(
        value,
        DNS1123_LABEL_MAX,
        DNS1123_LABEL,
        "must not contain dots"
        if DNS1123_SUBDOMAIN.fullmatch(value)
        else "must consist of lower case letters, digits or '-', and start and end with a letter or digit",
    )


def dns1123_subdomain(value: str) -> list[str]:
    """Names of most objects: Jobs, ConfigMaps, Secrets, claims, PriorityClasses, Kueue LocalQueues."""
    return _matching(
        value,
        DNS1123_SUBDOMAIN_MAX,
        DNS1123_SUBDOMAIN,
        "must consist of lower case letters, digits, '-' or '.', and start and end with a letter or digit",
    )


def dns1035_label(value: str) -> list[str]:
    """Names of Services, up to 1.35 (1.36's RelaxedServiceNameValidation, on by default, takes DNS-1123 labels)."""
    return _matching(
        value,
        DNS1123_LABEL_MAX,
        DNS1035_LABEL,
        "must consist of lower case letters, digits or '-', start with a letter and end with a letter or digit",
    )


def label_key(value: str) -> list[str]:
    """A label key, also a node selector's and a toleration's key (apimachinery's IsQualifiedName)."""
    parts = value.split("/")
    if len(parts) > 2:
        return ["must be a name with an optional DNS subdomain prefix and one '/' (e.g. 'example.com/MyName')"]
    problems = []
    if len(parts) == 2:
        prefix = parts[0]
        problems += (
            ["prefix part must be non-empty"]
            if not prefix
            else [f"prefix part {problem}" for problem in dns1123_subdomain(prefix)]
        )
    name = parts[-1]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > LABEL_VALUE_MAX:
        problems.append(f"name part must be no more than {LABEL_VALUE_MAX} characters")
    if not LABEL_NAME.fullmatch(name):
        problems.append(
            "name part must consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit"
        )
    return problems


def label_value(value: str) -> list[str]:
    """A label value, also a node selector's value and an Equal toleration's value; may be empty."""
    problems = _too_long(value, LABEL_VALUE_MAX)
    if value and not LABEL_NAME.fullmatch(value):
        problems.append(
            "must be empty or consist of letters, digits, '-', '_' or '.', and start and end with a letter or digit"
        )
    return problems


# The grammar that pkg/api/resource documents for a Quantity (its parser also takes a few degenerate
# spellings, such as "+" or ".", that no person means).
QUANTITY = re.compile(
    r"(?P<number>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# The server keeps a container's requests as int64 milli-units (cpu) or units (memory): bigger is no request.
QUANTITY_MAX = Decimal(2**63 - 1) / 1000


def quantity(value: str) -> Decimal | None:
    """The amount a Quantity string stands for, or None when it is none."""
    match = QUANTITY.fullmatch(value)
    if not match:
        return None
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in BINARY_SUFFIXES:
        return number * 2 ** BINARY_SUFFIXES[suffix]
    if suffix in DECIMAL_SUFFIXES:
        return number.scaleb(DECIMAL_SUFFIXES[suffix])
    exponent = int(suffix[1:])
    return number.scaleb(exponent) if abs(exponent) <= 100 else None


def request_quantity(value: str) -> list[str]:
    """A container's request or limit, or an emptyDir's sizeLimit: a Quantity that is not negative."""
    amount = quantity(value)
    if amount is None:
        return [
            "must be a quantity such as '4', '500m', '16Gi' or '1.5e3' (a number and one of the suffixes "
            "n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent)"
        ]
    if amount < 0:
        return ["must not be negative"]
    if amount > QUANTITY_MAX:
        return [f"must be at most {QUANTITY_MAX:.0f}"]
    return []


def toleration(key: str | None, operator: str, value: str | None) -> list[tuple[str, str]]:
    """(field, problem) for one toleration, as ValidateTolerations finds them (effect is a closed set)."""
    key, value = key or "", value or ""
    problems = [("key", problem) for problem in (label_key(key) if key else [])]
    if not key and operator != "Exists":
        problems.append(
            (
                "operator",
                "must be Exists when key is empty (which tolerates every taint); give a key, or operator: Exists",
            )
        )
    if operator == "Exists" and value:
        problems.append(("value", "must be empty when operator is Exists; remove value, or use operator: Equal"))
    if operator == "Equal":
        problems += [("value", problem) for problem in label_value(value)]
    return problems


# github.com/distribution/reference v0.6.0, regexp.go.
_ALPHANUMERIC = "[a-z0-9]+"
_SEPARATOR = "(?:[._]|__|[-]+)"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[(?:[a-fA-F0-9:]+)\])"
_DOMAIN_AND_PORT = f"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = f"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_REMOTE_NAME = f"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Go's \w is ASCII
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
IMAGE_REFERENCE = re.compile(
    f"(?P<name>(?:{_DOMAIN_AND_PORT}/)?{_REMOTE_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
IMAGE_NAME = re.compile(f"(?:(?P<domain>{_DOMAIN_AND_PORT})/)?(?P<path>{_REMOTE_NAME})")
HEX_IDENTIFIER = re.compile("[a-f0-9]{64}")
REPOSITORY_MAX = 255
DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}  # go-digest's algorithms, lower-case hex


def _docker_domain(image: str) -> tuple[str, str]:
    """splitDockerDomain: (domain, the rest); a first part that is no host goes to docker.io."""
    first, slash, rest = image.partition("/")
    if not slash:
        return "docker.io", f"library/{image}"
    if first == "localhost" or "." in first or ":" in first or first.lower() != first:
        domain, rest = ("docker.io" if first == "index.docker.io" else first), rest
    else:
        domain, rest = "docker.io", image
    return domain, (f"library/{rest}" if domain == "docker.io" and "/" not in rest else rest)


def image_reference(image: str) -> list[str]:
    """What the kubelet's ParseImageName (reference.ParseNormalizedNamed) refuses, as InvalidImageName."""
    if not image:
        return ["must not be empty"]
    if HEX_IDENTIFIER.fullmatch(image):
        return ["must not be a 64-character hexadecimal image ID; give a repository name"]
    domain, remainder = _docker_domain(image)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        return [f"repository name {remote!r} must be lower case"]
    match = IMAGE_REFERENCE.fullmatch(f"{domain}/{remainder}")
    if not match:
        return [
            "must be an image reference [HOST[:PORT]/]PATH[:TAG][@DIGEST] such as registry.example/team/image:1.0, "
            "its path in lower-case letters, digits and separators ('.', '_', '__', '-'), its tag up to 128 "
            "letters, digits, '_', '.' or '-'"
        ]
    if len(IMAGE_NAME.fullmatch(match["name"])["path"]) > REPOSITORY_MAX:
        return [f"repository name must not be more than {REPOSITORY_MAX} characters"]
    if match["digest"]:
        algorithm, encoded = match["digest"].split(":", 1)
        if algorithm not in DIGEST_HEX_LENGTH:
            return [f"digest algorithm {algorithm!r} is unsupported; use sha256, sha384 or sha512"]
        if len(encoded) != DIGEST_HEX_LENGTH[algorithm] or not re.fullmatch("[a-f0-9]+", encoded):
            return [f"a {algorithm} digest must be {DIGEST_HEX_LENGTH[algorithm]} lower-case hexadecimal digits"]
    return []
