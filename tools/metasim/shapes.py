"""The simulator's own declaration of Meta's outbound message objects, with Meta's limits.

Written from `shared/reference/meta-messages-and-webhooks.md` §1-§2 (never shared with our ingest:
the simulator is an independent implementation of Meta). Each type object is a msgspec Struct;
decoding a body validates it, and `translate` turns msgspec's error into the Graph error Meta
answers: `(#100) The parameter text['body'] is required.`, `Unexpected key "x" on param
"interactive['action']"`, and `(#131009)` for the value limits of interactive messages.

Nested objects refuse unknown keys (Graph answers "Unexpected key"); the top-level envelope is
checked in `core.parse_outbound` and ignores keys it does not know.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

# A constraint broken by a __post_init__ check carries the Meta code it answers with as a prefix.
_CODE_PREFIX = re.compile(r"^(?P<code>\d{3,7}): ")


class _Obj(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A nested Graph parameter object: unknown keys are refused, like Graph does."""


def _limit(value_code: int, message: str) -> ValueError:
    return ValueError(f"{value_code}: {message}")


NonEmpty = Annotated[str, Meta(min_length=1)]
Caption = Annotated[str, Meta(min_length=1, max_length=1024)]
Footer60 = Annotated[str, Meta(min_length=1, max_length=60)]
MEDIA_ID = re.compile(r"^\d{1,32}$")


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


# --------------------------------------------------------------------------------------------
# text, media, location, contacts, reaction, context
# --------------------------------------------------------------------------------------------


class Text(_Obj):
    body: Annotated[str, Meta(min_length=1, max_length=4096)]
    preview_url: bool = False


class MediaRef(_Obj):
    """Exactly one of `id` (uploaded media) or `link` (a public http(s) URL)."""

    id: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (self.link is None):
            raise ValueError("must have exactly one of id or link")
        if self.id is not None and not MEDIA_ID.fullmatch(self.id):
            raise ValueError(f"id {self.id!r} is not a media id")
        if self.link is not None and not is_http_url(self.link):
            raise ValueError(f"link {self.link!r} is not an http(s) URL")


class Image(MediaRef):
    caption: Caption | None = None


class Video(MediaRef):
    caption: Caption | None = None


class Document(MediaRef):
    caption: Caption | None = None
    filename: Annotated[str, Meta(min_length=1, max_length=240)] | None = None


class Audio(MediaRef):
    # A voice message (OGG/OPUS only): auto-download, transcription, a `played` status.
    voice: bool = False


class Sticker(MediaRef):
    pass


def _coordinate(value: float | str, name: str, bound: float) -> None:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number in decimal degrees") from None
    if not -bound <= number <= bound:
        raise ValueError(f"{name} must be between -{bound:g} and {bound:g}")


class Location(_Obj):
    # Meta's examples send the coordinates as strings; numbers are accepted too.
    latitude: float | str
    longitude: float | str
    name: str | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        _coordinate(self.latitude, "latitude", 90)
        _coordinate(self.longitude, "longitude", 180)


class ContactName(_Obj):
    formatted_name: NonEmpty
    first_name: str | None = None
    last_name: str | None = None
    middle_name: str | None = None
    suffix: str | None = None
    prefix: str | None = None


class ContactAddress(_Obj):
    street: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None
    country_code: str | None = None
    type: str | None = None


class ContactEmail(_Obj):
    email: str | None = None
    type: str | None = None


class ContactOrg(_Obj):
    company: str | None = None
    department: str | None = None
    title: str | None = None


class ContactPhone(_Obj):
    phone: str | None = None
    type: str | None = None
    wa_id: str | None = None


class ContactUrl(_Obj):
    url: str | None = None
    type: str | None = None


class Contact(_Obj):
    name: ContactName
    birthday: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    addresses: list[ContactAddress] | None = None
    emails: list[ContactEmail] | None = None
    org: ContactOrg | None = None
    phones: list[ContactPhone] | None = None
    urls: list[ContactUrl] | None = None


Contacts = Annotated[list[Contact], Meta(min_length=1, max_length=257)]


class Reaction(_Obj):
    message_id: NonEmpty
    # "" removes the reaction; otherwise one emoji (or its escape sequence, decoded by JSON).
    emoji: Annotated[str, Meta(max_length=16)]

    def __post_init__(self) -> None:
        if any(c.isascii() and c.isalnum() for c in self.emoji):
            raise ValueError("emoji must be an emoji or an empty string")


class Context(_Obj):
    message_id: NonEmpty


class TypingIndicator(_Obj):
    type: Literal["text"]


class ReadReceipt(msgspec.Struct, omit_defaults=True):
    """`{"messaging_product", "status": "read", "message_id", "typing_indicator"?}`."""

    messaging_product: Literal["whatsapp"]
    status: Literal["read"]
    message_id: NonEmpty
    typing_indicator: TypingIndicator | None = None


# --------------------------------------------------------------------------------------------
# interactive
# --------------------------------------------------------------------------------------------


class _Tagged(_Obj, tag_field="type"):
    pass


class TextHeader(_Tagged, tag="text"):
    text: Footer60


class ImageHeader(_Tagged, tag="image"):
    image: MediaRef


class VideoHeader(_Tagged, tag="video"):
    video: MediaRef


class DocumentHeader(_Tagged, tag="document"):
    document: Document


Header = TextHeader | ImageHeader | VideoHeader | DocumentHeader


class Body1024(_Obj):
    text: Annotated[str, Meta(min_length=1, max_length=1024)]


class Body4096(_Obj):
    text: Annotated[str, Meta(min_length=1, max_length=4096)]


class Footer(_Obj):
    text: Footer60


class ReplyButtonReply(_Obj):
    id: Annotated[str, Meta(min_length=1, max_length=256)]
    title: Annotated[str, Meta(min_length=1, max_length=20)]


class ReplyButton(_Obj):
    type: Literal["reply"]
    reply: ReplyButtonReply


class ButtonAction(_Obj):
    buttons: Annotated[list[ReplyButton], Meta(min_length=1, max_length=3)]

    def __post_init__(self) -> None:
        if len({b.reply.title for b in self.buttons}) != len(self.buttons):
            raise _limit(131009, "button titles must be unique")
        if len({b.reply.id for b in self.buttons}) != len(self.buttons):
            raise _limit(131009, "button ids must be unique")


class ButtonInteractive(_Tagged, tag="button"):
    body: Body1024
    action: ButtonAction
    header: Header | None = None
    footer: Footer | None = None


class Row(_Obj):
    id: Annotated[str, Meta(min_length=1, max_length=200)]
    title: Annotated[str, Meta(min_length=1, max_length=24)]
    description: Annotated[str, Meta(max_length=72)] | None = None


class Section(_Obj):
    rows: Annotated[list[Row], Meta(min_length=1, max_length=10)]
    title: Annotated[str, Meta(min_length=1, max_length=24)] | None = None


class ListAction(_Obj):
    button: Annotated[str, Meta(min_length=1, max_length=20)]
    sections: Annotated[list[Section], Meta(min_length=1, max_length=10)]

    def __post_init__(self) -> None:
        rows = [row for section in self.sections for row in section.rows]
        if len(rows) > 10:
            raise _limit(131009, f"a list has at most 10 rows in all sections, got {len(rows)}")
        if len({row.id for row in rows}) != len(rows):
            raise _limit(131009, "row ids must be unique")
        if len(self.sections) > 1 and any(s.title is None for s in self.sections):
            raise _limit(131009, "every section needs a title when there is more than one")


class ListInteractive(_Tagged, tag="list"):
    body: Body4096
    action: ListAction
    header: TextHeader | None = None
    footer: Footer | None = None


class CtaUrlParameters(_Obj):
    display_text: Annotated[str, Meta(min_length=1, max_length=20)]
    url: NonEmpty

    def __post_init__(self) -> None:
        if not is_http_url(self.url):
            raise ValueError(f"url {self.url!r} is not an http(s) URL")


class CtaUrlAction(_Obj):
    name: Literal["cta_url"]
    parameters: CtaUrlParameters


class CtaUrlInteractive(_Tagged, tag="cta_url"):
    body: Body1024
    action: CtaUrlAction
    header: Header | None = None
    footer: Footer | None = None


class SendLocationAction(_Obj):
    name: Literal["send_location"]


class LocationRequestInteractive(_Tagged, tag="location_request_message"):
    body: Body1024
    action: SendLocationAction


class FlowActionPayload(_Obj):
    screen: NonEmpty | None = None
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.data is not None and not self.data:
            raise ValueError("data must be a non-empty object when given")


class FlowParameters(_Obj):
    flow_message_version: Literal["3"]
    flow_cta: NonEmpty
    flow_id: NonEmpty | None = None
    flow_name: NonEmpty | None = None
    flow_token: NonEmpty | None = None
    mode: Literal["published", "draft"] = "published"
    flow_action: Literal["navigate", "data_exchange"] = "navigate"
    flow_action_payload: FlowActionPayload | None = None

    def __post_init__(self) -> None:
        if (self.flow_id is None) == (self.flow_name is None):
            raise ValueError("must have exactly one of flow_id or flow_name")
        if self.flow_action_payload is not None and self.flow_action != "navigate":
            raise ValueError("flow_action_payload is only allowed with flow_action navigate")


class FlowAction(_Obj):
    name: Literal["flow"]
    parameters: FlowParameters


class FlowInteractive(_Tagged, tag="flow"):
    body: Body1024
    action: FlowAction
    header: TextHeader | None = None
    footer: Footer | None = None


class ProductAction(_Obj):
    catalog_id: NonEmpty
    product_retailer_id: NonEmpty


class ProductInteractive(_Tagged, tag="product"):
    action: ProductAction
    body: Body1024 | None = None
    footer: Footer | None = None


class ProductItem(_Obj):
    product_retailer_id: NonEmpty


class ProductSection(_Obj):
    title: Annotated[str, Meta(min_length=1, max_length=24)]
    product_items: Annotated[list[ProductItem], Meta(min_length=1, max_length=30)]


class ProductListAction(_Obj):
    catalog_id: NonEmpty
    sections: Annotated[list[ProductSection], Meta(min_length=1, max_length=10)]

    def __post_init__(self) -> None:
        items = sum(len(s.product_items) for s in self.sections)
        if items > 30:
            raise _limit(131009, f"a multi-product message has at most 30 products, got {items}")


class ProductListInteractive(_Tagged, tag="product_list"):
    header: TextHeader
    body: Body1024
    action: ProductListAction
    footer: Footer | None = None


class CatalogParameters(_Obj):
    thumbnail_product_retailer_id: NonEmpty | None = None


class CatalogAction(_Obj):
    name: Literal["catalog_message"]
    parameters: CatalogParameters | None = None


class CatalogInteractive(_Tagged, tag="catalog_message"):
    body: Body1024
    action: CatalogAction
    footer: Footer | None = None


class AddressParameters(msgspec.Struct):
    """India-only address form: `country` is mandatory; the rest is passed through."""

    country: NonEmpty
    values: dict[str, Any] | None = None
    saved_addresses: list[dict[str, Any]] | None = None
    validation_errors: dict[str, Any] | None = None


class AddressAction(_Obj):
    name: Literal["address_message"]
    parameters: AddressParameters


class AddressInteractive(_Tagged, tag="address_message"):
    body: Body1024
    action: AddressAction
    header: TextHeader | None = None
    footer: Footer | None = None


class CardBody(_Obj):
    text: Annotated[str, Meta(min_length=1, max_length=160)]


class CarouselCard(_Obj):
    card_index: Annotated[int, Meta(ge=0, le=9)]
    type: Literal["cta_url", "product"]
    action: dict[str, Any]
    header: ImageHeader | VideoHeader | None = None
    body: CardBody | None = None


class CarouselAction(_Obj):
    cards: Annotated[list[CarouselCard], Meta(min_length=2, max_length=10)]

    def __post_init__(self) -> None:
        if len({card.card_index for card in self.cards}) != len(self.cards):
            raise _limit(131009, "card_index values must be unique")
        if len({card.type for card in self.cards}) != 1:
            raise _limit(131009, "every card must have the same type")
        headers = {type(card.header).__name__ for card in self.cards if card.header is not None}
        if len(headers) > 1:
            raise _limit(131009, "every card header must have the same type")


class CarouselInteractive(_Tagged, tag="carousel"):
    body: Body1024
    action: CarouselAction


class VoiceCallParameters(_Obj):
    display_text: Annotated[str, Meta(min_length=1, max_length=20)] | None = None
    ttl_minutes: Annotated[float, Meta(gt=0)] | None = None
    payload: str | None = None


class VoiceCallAction(_Obj):
    name: Literal["voice_call"]
    parameters: VoiceCallParameters | None = None


class VoiceCallInteractive(_Tagged, tag="voice_call"):
    body: Body1024
    action: VoiceCallAction


Interactive = (
    ButtonInteractive
    | ListInteractive
    | CtaUrlInteractive
    | LocationRequestInteractive
    | FlowInteractive
    | ProductInteractive
    | ProductListInteractive
    | CatalogInteractive
    | AddressInteractive
    | CarouselInteractive
    | VoiceCallInteractive
)
INTERACTIVE_TYPES = (
    "button",
    "list",
    "cta_url",
    "location_request_message",
    "flow",
    "product",
    "product_list",
    "catalog_message",
    "address_message",
    "carousel",
    "voice_call",
)


# --------------------------------------------------------------------------------------------
# template: components and parameters
# --------------------------------------------------------------------------------------------


class TextParam(_Tagged, tag="text"):
    text: NonEmpty
    parameter_name: Annotated[str, Meta(pattern=r"^[a-z0-9_]+$")] | None = None


class CurrencyValue(_Obj):
    fallback_value: NonEmpty
    code: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    amount_1000: int


class CurrencyParam(_Tagged, tag="currency"):
    currency: CurrencyValue
    parameter_name: str | None = None


class DateTimeValue(msgspec.Struct):
    fallback_value: NonEmpty


class DateTimeParam(_Tagged, tag="date_time"):
    date_time: DateTimeValue
    parameter_name: str | None = None


class ImageParam(_Tagged, tag="image"):
    image: MediaRef


class VideoParam(_Tagged, tag="video"):
    video: MediaRef


class GifParam(_Tagged, tag="gif"):
    gif: MediaRef


class DocumentParam(_Tagged, tag="document"):
    document: Document


class LocationParam(_Tagged, tag="location"):
    location: Location


class ProductRef(_Obj):
    product_retailer_id: NonEmpty
    catalog_id: NonEmpty


class ProductParam(_Tagged, tag="product"):
    product: ProductRef


class PayloadParam(_Tagged, tag="payload"):
    payload: Annotated[str, Meta(min_length=1, max_length=1000)]


class CouponCodeParam(_Tagged, tag="coupon_code"):
    coupon_code: Annotated[str, Meta(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9]+$")]


class ActionParam(_Tagged, tag="action"):
    action: dict[str, Any]


class LimitedTimeOffer(_Obj):
    expiration_time_ms: Annotated[int, Meta(gt=0)]


class LimitedTimeOfferParam(_Tagged, tag="limited_time_offer"):
    limited_time_offer: LimitedTimeOffer


class TapTargetParam(_Tagged, tag="tap_target_configuration"):
    tap_target_configuration: Any


Param = (
    TextParam
    | CurrencyParam
    | DateTimeParam
    | ImageParam
    | VideoParam
    | GifParam
    | DocumentParam
    | LocationParam
    | ProductParam
    | PayloadParam
    | CouponCodeParam
    | ActionParam
    | LimitedTimeOfferParam
    | TapTargetParam
)


class HeaderComponent(_Tagged, tag="header"):
    parameters: list[Param] = []


class BodyComponent(_Tagged, tag="body"):
    parameters: list[Param] = []


BUTTON_SUB_TYPES = frozenset(
    {"quick_reply", "url", "copy_code", "flow", "catalog", "mpm", "voice_call", "otp"}
)


class ButtonComponent(_Tagged, tag="button"):
    sub_type: str
    index: int | str
    parameters: list[Param] = []

    def __post_init__(self) -> None:
        self.sub_type = self.sub_type.lower()
        if self.sub_type not in BUTTON_SUB_TYPES:
            raise ValueError(f"sub_type must be one of {sorted(BUTTON_SUB_TYPES)}")
        if isinstance(self.index, str):
            if not self.index.isdigit():
                raise ValueError("index must be an integer")
            self.index = int(self.index)
        if not 0 <= self.index <= 9:
            raise ValueError("index must be between 0 and 9")


class LimitedTimeOfferComponent(_Tagged, tag="limited_time_offer"):
    parameters: Annotated[list[LimitedTimeOfferParam], Meta(min_length=1, max_length=1)]


class CardComponent(_Obj):
    card_index: Annotated[int, Meta(ge=0, le=9)]
    components: list[HeaderComponent | BodyComponent | ButtonComponent]


class CarouselComponent(_Tagged, tag="carousel"):
    cards: Annotated[list[CardComponent], Meta(min_length=1, max_length=10)]


Component = (
    HeaderComponent
    | BodyComponent
    | ButtonComponent
    | LimitedTimeOfferComponent
    | CarouselComponent
)


class Language(_Obj):
    code: Annotated[str, Meta(min_length=2, max_length=20)]
    policy: Literal["deterministic"] | None = None


class Template(_Obj):
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    language: Language
    components: list[Component] = []


# The object each `type` carries, keyed by the type's name.
TYPE_OBJECTS: dict[str, Any] = {
    "text": Text,
    "image": Image,
    "video": Video,
    "audio": Audio,
    "document": Document,
    "sticker": Sticker,
    "location": Location,
    "contacts": Contacts,
    "interactive": Interactive,
    "reaction": Reaction,
    "template": Template,
}
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


def normalise_template(template: Any) -> Any:
    """Component `type`s are case-insensitive at Meta (clients send "HEADER" and "header")."""
    if not isinstance(template, dict) or not isinstance(template.get("components"), list):
        return template
    components = []
    for component in template["components"]:
        if isinstance(component, dict) and isinstance(component.get("type"), str):
            component = {**component, "type": component["type"].lower()}
            if component["type"] == "carousel" and isinstance(component.get("cards"), list):
                component["cards"] = [
                    {
                        **card,
                        "components": [
                            {**c, "type": c["type"].lower()}
                            if isinstance(c, dict) and isinstance(c.get("type"), str)
                            else c
                            for c in card.get("components", [])
                        ],
                    }
                    if isinstance(card, dict) and isinstance(card.get("components"), list)
                    else card
                    for card in component["cards"]
                ]
        components.append(component)
    return {**template, "components": components}


# --------------------------------------------------------------------------------------------
# msgspec error -> Meta's wording
# --------------------------------------------------------------------------------------------

_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def meta_path(root: str, path: str) -> str:
    """`$.action.sections[0].rows` under `interactive` -> interactive['action']['sections'][0]..."""
    out = root
    for name, index in _SEGMENT.findall(path):
        if name:
            out = f"{out}['{name}']" if out else name
        else:
            out = f"{out}[{index}]"
    return out


def translate(error: msgspec.ValidationError, root: str) -> tuple[int, str]:
    """(Meta code, details) for a body under the parameter `root` that failed to decode."""
    text = str(error)
    match = _AT.match(text)
    message, path = (match["message"], match["path"]) if match else (text, "")
    param = meta_path(root, path)
    code = 100
    if prefixed := _CODE_PREFIX.match(message):
        code = int(prefixed["code"])
        message = message[prefixed.end() :]
    if found := re.match(r"Object missing required field `([^`]+)`$", message):
        return code, f"The parameter {param}['{found[1]}'] is required."
    if found := re.match(r"Object contains unknown field `([^`]+)`$", message):
        return code, f'Unexpected key "{found[1]}" on param "{param}".'
    limited = 131009 if root == "interactive" else code
    if found := re.match(r"Expected `str` of length <= (\d+)$", message):
        return limited, f"Param {param} must be at most {found[1]} characters long."
    if re.match(r"Expected `str` of length >= 1$", message):
        return code, f"The parameter {param} is required."
    if found := re.match(r"Expected `array` of length <= (\d+)$", message):
        return limited, f"Param {param} must have at most {found[1]} elements."
    if found := re.match(r"Expected `array` of length >= (\d+)$", message):
        return limited, f"Param {param} must have at least {found[1]} elements."
    if found := re.match(r"Invalid value '([^']*)'$", message):
        return code, f"Param {param} has an invalid value {found[1]!r}."
    return code, f"Invalid parameter {param}: {message}."
