"""Every outbound message shape of Meta's Cloud API, declared once as msgspec Structs.

These declarations are the single source of truth for three things:
  * validation: core.py decodes a request body into `V1SendRequest` / `MetaSendRequest` in one
    pass (msgspec checks types, lengths, counts, patterns and unknown fields);
  * the content sent to Meta: the decoded object of the message's type, turned back into JSON
    (fields the client left out stay out; `null`s the client sent stay, as Meta took them);
  * the OpenAPI document: `python -m services.ingest.openapi --write` generates its message
    schemas from these classes, and a test fails when the served document and they differ.

Limits are Meta's published ones (see docs/… reference: text 4096, captions 1024, 1–3 reply
buttons with unique titles ≤ 20, list ≤ 10 sections and ≤ 10 rows in all, contacts ≤ 257, ...).
What a type annotation cannot say (exactly one of `link`/`id`, unique titles, rows counted across
sections, which parameter kinds a template component takes) is checked in `__post_init__`, next
to the declaration; such errors read "[field] rule", which core.py turns into our error codes.

Optional fields default to UNSET (left out of the content) and accept `null`, which popular
clients send for "not given" (e.g. pywa's location `name`/`address`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from msgspec import UNSET, Meta, Struct, UnsetType, field

from shared.messages import MessageType

# --- field types ------------------------------------------------------------------------------

NonEmpty = Annotated[str, Meta(min_length=1, max_length=4096)]
Url = Annotated[
    str, Meta(pattern=r"^https?://\S+$", max_length=2000, description="An http(s) URL.")
]
MediaId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=128,
        description="A media id from the Media API (upload or webhook).",
    ),
]
Caption = Annotated[str, Meta(max_length=1024)]
Filename = Annotated[str, Meta(min_length=1, max_length=255)]
HeaderText = Annotated[str, Meta(min_length=1, max_length=60)]
FooterText = Annotated[str, Meta(min_length=1, max_length=60)]
Body1024 = Annotated[str, Meta(min_length=1, max_length=1024)]
Body4096 = Annotated[str, Meta(min_length=1, max_length=4096)]
ButtonLabel = Annotated[str, Meta(min_length=1, max_length=20)]
# Decimal degrees: Meta's examples send strings, clients often numbers; both are accepted.
Latitude = (
    Annotated[float, Meta(ge=-90, le=90)]
    | Annotated[str, Meta(pattern=r"^\s*-?\d{1,2}(\.\d+)?\s*$")]
)
Longitude = (
    Annotated[float, Meta(ge=-180, le=180)]
    | Annotated[str, Meta(pattern=r"^\s*-?\d{1,3}(\.\d+)?\s*$")]
)
# The id of a message: a wamid, or one of our own message ids (`msg_…`), resolved to its wamid.
MessageRef = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=512,
        description="A wamid, or one of this account's message ids "
        "(msg_…), which is sent as its wamid.",
    ),
]
# A button's position in the template: Meta's pages show both "0" and 0.
ButtonIndex = Annotated[int, Meta(ge=0, le=9)] | Annotated[str, Meta(pattern=r"^[0-9]$")]
CallbackData = Annotated[str, Meta(max_length=512)]
ClientReference = Annotated[str, Meta(max_length=256)]
ValiditySeconds = Annotated[int, Meta(ge=30, le=30 * 24 * 3600)]
PhoneNumberId = Annotated[str, Meta(min_length=1, max_length=64)]


class FieldRule(ValueError):
    """A rule that spans fields, broken: msgspec reports it at the object's path."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"[{field}] {rule}")


class _Object(Struct, forbid_unknown_fields=True):
    """Base of every object: unknown fields are refused (the error names them)."""


def _given(value: Any) -> bool:
    return value is not UNSET and value is not None


def _exactly_one(obj: Any, names: tuple[str, str]) -> None:
    given = [name for name in names if _given(getattr(obj, name))]
    if len(given) != 1:
        raise FieldRule(names[0], f"exactly one of `{names[0]}` or `{names[1]}` is required")


def _unique(values: list[str], field: str, what: str) -> None:
    if len(set(values)) != len(values):
        raise FieldRule(field, f"{what} must be unique")


# --- text, media, location, contacts, reaction -------------------------------------------------


class TextObject(_Object):
    """`text`: a body of up to 4096 characters; `preview_url` previews the first URL."""

    body: Body4096
    preview_url: bool | UnsetType | None = UNSET


class _Media(_Object):
    id: MediaId | UnsetType = UNSET
    link: Url | UnsetType = UNSET

    def __post_init__(self) -> None:
        _exactly_one(self, ("id", "link"))


class ImageObject(_Media):
    """`image` (JPEG or PNG, ≤ 5 MB): exactly one of `id` or `link`; caption ≤ 1024."""

    caption: Caption | UnsetType | None = UNSET


class VideoObject(_Media):
    """`video` (MP4 or 3GPP, ≤ 16 MB): exactly one of `id` or `link`; caption ≤ 1024."""

    caption: Caption | UnsetType | None = UNSET


class DocumentObject(_Media):
    """`document` (≤ 100 MB): exactly one of `id` or `link`; caption ≤ 1024; `filename`."""

    caption: Caption | UnsetType | None = UNSET
    filename: Filename | UnsetType | None = UNSET


class AudioObject(_Media):
    """`audio` (≤ 16 MB): exactly one of `id` or `link`; no caption; `voice: true` for a voice
    message (OGG/OPUS)."""

    voice: bool | UnsetType | None = UNSET


class StickerObject(_Media):
    """`sticker` (WebP; ≤ 100 KB static, ≤ 500 KB animated): exactly one of `id` or `link`."""


class MediaRef(_Object):
    """A media header (interactive header or template parameter): exactly one of `id`/`link`."""

    id: MediaId | UnsetType = UNSET
    link: Url | UnsetType = UNSET

    def __post_init__(self) -> None:
        _exactly_one(self, ("id", "link"))


class DocumentRef(MediaRef):
    """A document header: exactly one of `id`/`link`, and a `filename`."""

    filename: Filename | UnsetType | None = UNSET


class LocationObject(_Object):
    """`location`: latitude and longitude in decimal degrees (numbers or strings)."""

    latitude: Latitude
    longitude: Longitude
    name: Annotated[str, Meta(max_length=1000)] | UnsetType | None = UNSET
    address: Annotated[str, Meta(max_length=1000)] | UnsetType | None = UNSET


ContactText = Annotated[str, Meta(max_length=512)] | None | UnsetType


class ContactName(_Object):
    formatted_name: Annotated[str, Meta(min_length=1, max_length=512)]
    first_name: ContactText = UNSET
    last_name: ContactText = UNSET
    middle_name: ContactText = UNSET
    suffix: ContactText = UNSET
    prefix: ContactText = UNSET


class ContactAddress(_Object):
    street: ContactText = UNSET
    city: ContactText = UNSET
    state: ContactText = UNSET
    zip: ContactText = UNSET
    country: ContactText = UNSET
    country_code: Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$")] | UnsetType | None = UNSET
    type: ContactText = UNSET


class ContactEmail(_Object):
    email: ContactText = UNSET
    type: ContactText = UNSET


class ContactOrg(_Object):
    company: ContactText = UNSET
    department: ContactText = UNSET
    title: ContactText = UNSET


class ContactPhone(_Object):
    phone: ContactText = UNSET
    type: ContactText = UNSET
    wa_id: Annotated[str, Meta(pattern=r"^\d{1,20}$")] | UnsetType | None = UNSET


class ContactUrl(_Object):
    url: ContactText = UNSET
    type: ContactText = UNSET


class ContactCard(_Object):
    """One contact card: only `name.formatted_name` is required; `birthday` is YYYY-MM-DD."""

    name: ContactName
    birthday: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | UnsetType | None = UNSET
    addresses: list[ContactAddress] | UnsetType | None = UNSET
    emails: list[ContactEmail] | UnsetType | None = UNSET
    org: ContactOrg | UnsetType | None = UNSET
    phones: list[ContactPhone] | UnsetType | None = UNSET
    urls: list[ContactUrl] | UnsetType | None = UNSET


ContactsArray = Annotated[
    list[ContactCard], Meta(min_length=1, max_length=257, description="1 to 257 contact cards.")
]


class ReactionObject(_Object):
    """`reaction`: an emoji on a message (a wamid or one of our ids); an empty emoji removes it."""

    message_id: MessageRef
    emoji: Annotated[str, Meta(max_length=32)]


# --- interactive --------------------------------------------------------------------------------


class _Header(_Object, tag_field="type"):
    pass


class TextHeader(_Header, tag="text"):
    text: HeaderText


class ImageHeader(_Header, tag="image"):
    image: MediaRef


class VideoHeader(_Header, tag="video"):
    video: MediaRef


class DocumentHeader(_Header, tag="document"):
    document: DocumentRef


Header = TextHeader | ImageHeader | VideoHeader | DocumentHeader


class Body(_Object):
    text: Body1024


class LongBody(_Object):
    text: Body4096


class Footer(_Object):
    text: FooterText


class ReplyButtonReply(_Object):
    id: Annotated[str, Meta(min_length=1, max_length=256)]
    title: ButtonLabel


class ReplyButton(_Object):
    type: Literal["reply"]
    reply: ReplyButtonReply


class ReplyButtonsAction(_Object):
    """1 to 3 reply buttons; their ids and titles are unique."""

    buttons: Annotated[list[ReplyButton], Meta(min_length=1, max_length=3)]

    def __post_init__(self) -> None:
        _unique([b.reply.title for b in self.buttons], "buttons", "button titles")
        _unique([b.reply.id for b in self.buttons], "buttons", "button ids")


class ListRow(_Object):
    id: Annotated[str, Meta(min_length=1, max_length=200)]
    title: Annotated[str, Meta(min_length=1, max_length=24)]
    description: Annotated[str, Meta(max_length=72)] | UnsetType | None = UNSET


class ListSection(_Object):
    rows: Annotated[list[ListRow], Meta(min_length=1, max_length=10)]
    title: Annotated[str, Meta(max_length=24)] | UnsetType | None = UNSET


class ListAction(_Object):
    """1 to 10 sections, at most 10 rows in all, row ids unique; a title on every section when
    there is more than one."""

    button: ButtonLabel
    sections: Annotated[list[ListSection], Meta(min_length=1, max_length=10)]

    def __post_init__(self) -> None:
        rows = [row for section in self.sections for row in section.rows]
        if len(rows) > 10:
            raise FieldRule("sections", "at most 10 rows across all sections")
        _unique([row.id for row in rows], "sections", "row ids")
        if len(self.sections) > 1 and not all(_given(s.title) for s in self.sections):
            raise FieldRule("sections", "every section needs a title when there are several")


class CtaUrlParameters(_Object):
    display_text: ButtonLabel
    url: Url


class CtaUrlAction(_Object):
    name: Literal["cta_url"]
    parameters: CtaUrlParameters


class LocationRequestAction(_Object):
    name: Literal["send_location"]


class FlowActionPayload(_Object):
    screen: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    data: dict[str, Any] | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if self.data is not UNSET and self.data is not None and not self.data:
            raise FieldRule("data", "`data` must be a non-empty object when given")


class FlowParameters(_Object):
    """Exactly one of `flow_id` or `flow_name`; `flow_action_payload` only with `navigate`."""

    flow_message_version: Annotated[str, Meta(pattern=r"^\d+(\.\d+)?$")]
    flow_cta: Annotated[str, Meta(min_length=1, max_length=30)]
    flow_id: Annotated[str, Meta(pattern=r"^\d+$")] | int | UnsetType | None = UNSET
    flow_name: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType | None = UNSET
    flow_token: Annotated[str, Meta(max_length=1000)] | UnsetType | None = UNSET
    mode: Literal["published", "draft"] | UnsetType | None = UNSET
    flow_action: Literal["navigate", "data_exchange"] | UnsetType | None = UNSET
    flow_action_payload: FlowActionPayload | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        _exactly_one(self, ("flow_id", "flow_name"))
        if _given(self.flow_action_payload) and self.flow_action == "data_exchange":
            raise FieldRule(
                "flow_action_payload", "`flow_action_payload` goes only with flow_action `navigate`"
            )


class FlowAction(_Object):
    name: Literal["flow"]
    parameters: FlowParameters


class ProductAction(_Object):
    catalog_id: NonEmpty
    product_retailer_id: NonEmpty


class ProductItem(_Object):
    product_retailer_id: NonEmpty


class ProductSection(_Object):
    product_items: Annotated[list[ProductItem], Meta(min_length=1, max_length=30)]
    title: Annotated[str, Meta(min_length=1, max_length=24)] | UnsetType | None = UNSET


def _at_most_30_products(sections: list[ProductSection]) -> None:
    if sum(len(s.product_items) for s in sections) > 30:
        raise FieldRule("sections", "at most 30 products across all sections")


class ProductListAction(_Object):
    """1 to 10 sections, at most 30 products in all."""

    catalog_id: NonEmpty
    sections: Annotated[list[ProductSection], Meta(min_length=1, max_length=10)]

    def __post_init__(self) -> None:
        _at_most_30_products(self.sections)


class CatalogParameters(_Object):
    thumbnail_product_retailer_id: NonEmpty | UnsetType | None = UNSET


class CatalogAction(_Object):
    name: Literal["catalog_message"]
    parameters: CatalogParameters | UnsetType | None = UNSET


class CardQuickReply(_Object):
    id: Annotated[str, Meta(min_length=1, max_length=256)]
    title: ButtonLabel


class CardButton(_Object):
    type: Literal["quick_reply"]
    quick_reply: CardQuickReply


class CardAction(_Object):
    """A media card's `cta_url` button (or quick replies), or a product card's product."""

    name: Literal["cta_url"] | UnsetType = UNSET
    parameters: CtaUrlParameters | UnsetType = UNSET
    buttons: Annotated[list[CardButton], Meta(min_length=1, max_length=2)] | UnsetType = UNSET
    catalog_id: NonEmpty | UnsetType = UNSET
    product_retailer_id: NonEmpty | UnsetType = UNSET


class CarouselCard(_Object):
    """A card: `cta_url` (image or video header) or `product`; body ≤ 160."""

    card_index: Annotated[int, Meta(ge=0, le=9)]
    type: Literal["cta_url", "product"]
    action: CardAction
    header: ImageHeader | VideoHeader | UnsetType = UNSET
    body: Body | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.body, Body) and len(self.body.text) > 160:
            raise FieldRule("body", "a card's body has at most 160 characters")
        if self.type == "cta_url" and not _given(self.header):
            raise FieldRule("header", "a media card needs an image or video header")


class CarouselAction(_Object):
    """2 to 10 cards with unique `card_index`, all of one kind, media headers of one type."""

    cards: Annotated[list[CarouselCard], Meta(min_length=2, max_length=10)]

    def __post_init__(self) -> None:
        _unique([str(c.card_index) for c in self.cards], "cards", "card indexes")
        if len({c.type for c in self.cards}) > 1:
            raise FieldRule("cards", "all cards are of one type")
        headers = {type(c.header).__name__ for c in self.cards if _given(c.header)}
        if len(headers) > 1:
            raise FieldRule("cards", "all card headers are of one media type")


class _Interactive(_Object, tag_field="type"):
    pass


class ButtonInteractive(_Interactive, tag="button"):
    """Reply buttons: body ≤ 1024, optional header (text ≤ 60, image, video, document) and
    footer ≤ 60, 1 to 3 buttons."""

    body: Body
    action: ReplyButtonsAction
    header: Header | UnsetType | None = UNSET
    footer: Footer | UnsetType | None = UNSET


class ListInteractive(_Interactive, tag="list"):
    """A list: body ≤ 4096, optional text header ≤ 60 and footer ≤ 60."""

    body: LongBody
    action: ListAction
    header: TextHeader | UnsetType | None = UNSET
    footer: Footer | UnsetType | None = UNSET


class CtaUrlInteractive(_Interactive, tag="cta_url"):
    """A call-to-action URL button: display text ≤ 20."""

    body: Body
    action: CtaUrlAction
    header: Header | UnsetType | None = UNSET
    footer: Footer | UnsetType | None = UNSET


class LocationRequestInteractive(_Interactive, tag="location_request_message"):
    """Asks the user for their location: a body and `action.name: send_location`."""

    body: Body
    action: LocationRequestAction


class FlowInteractive(_Interactive, tag="flow"):
    """Opens a WhatsApp Flow."""

    body: Body
    action: FlowAction
    header: Header | UnsetType | None = UNSET
    footer: Footer | UnsetType | None = UNSET


class ProductInteractive(_Interactive, tag="product"):
    """One product of a catalog."""

    action: ProductAction
    body: Body | UnsetType | None = UNSET
    footer: Footer | UnsetType | None = UNSET


class ProductListInteractive(_Interactive, tag="product_list"):
    """Several products: a text header and a body are required."""

    header: TextHeader
    body: Body
    action: ProductListAction
    footer: Footer | UnsetType | None = UNSET


class CatalogInteractive(_Interactive, tag="catalog_message"):
    """The business's catalog."""

    body: Body
    action: CatalogAction
    footer: Footer | UnsetType | None = UNSET


class CarouselInteractive(_Interactive, tag="carousel"):
    """Media or product cards; nothing but the body outside the cards."""

    body: Body
    action: CarouselAction


InteractiveObject = (
    ButtonInteractive
    | ListInteractive
    | CtaUrlInteractive
    | LocationRequestInteractive
    | FlowInteractive
    | ProductInteractive
    | ProductListInteractive
    | CatalogInteractive
    | CarouselInteractive
)


# --- template -----------------------------------------------------------------------------------


class _Parameter(_Object, tag_field="type"):
    pass


class TextParameter(_Parameter, tag="text"):
    """A text value; `parameter_name` for templates with named parameters."""

    text: Annotated[str, Meta(min_length=1, max_length=1024)]
    parameter_name: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$")] | UnsetType = UNSET


class CurrencyValue(_Object):
    fallback_value: NonEmpty
    code: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
    amount_1000: int


class CurrencyParameter(_Parameter, tag="currency"):
    currency: CurrencyValue
    parameter_name: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$")] | UnsetType = UNSET


class DateTimeValue(_Object):
    fallback_value: NonEmpty


class DateTimeParameter(_Parameter, tag="date_time"):
    date_time: DateTimeValue
    parameter_name: Annotated[str, Meta(pattern=r"^[a-z0-9_]{1,64}$")] | UnsetType = UNSET


class ImageParameter(_Parameter, tag="image"):
    image: MediaRef


class VideoParameter(_Parameter, tag="video"):
    video: MediaRef


class GifParameter(_Parameter, tag="gif"):
    gif: MediaRef


class DocumentParameter(_Parameter, tag="document"):
    document: DocumentRef


class LocationParameter(_Parameter, tag="location"):
    location: LocationObject


class ProductValue(_Object):
    product_retailer_id: NonEmpty
    catalog_id: NonEmpty


class ProductParameter(_Parameter, tag="product"):
    product: ProductValue


class PayloadParameter(_Parameter, tag="payload"):
    """A quick-reply button's payload, given back in the user's reply."""

    payload: Annotated[str, Meta(min_length=1, max_length=1000)]


class CouponCodeParameter(_Parameter, tag="coupon_code"):
    coupon_code: Annotated[str, Meta(min_length=1, max_length=20)]


class ButtonActionValue(_Object):
    """A flow button's token and data, or a catalog/MPM button's products."""

    flow_token: Annotated[str, Meta(max_length=1000)] | UnsetType | None = UNSET
    flow_action_data: dict[str, Any] | UnsetType | None = UNSET
    thumbnail_product_retailer_id: NonEmpty | UnsetType | None = UNSET
    sections: Annotated[list[ProductSection], Meta(min_length=1, max_length=10)] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.sections, list):
            _at_most_30_products(self.sections)


class ActionParameter(_Parameter, tag="action"):
    action: ButtonActionValue


class LimitedTimeOfferValue(_Object):
    expiration_time_ms: Annotated[int, Meta(ge=0)]


class LimitedTimeOfferParameter(_Parameter, tag="limited_time_offer"):
    limited_time_offer: LimitedTimeOfferValue


Parameter = (
    TextParameter
    | CurrencyParameter
    | DateTimeParameter
    | ImageParameter
    | VideoParameter
    | GifParameter
    | DocumentParameter
    | LocationParameter
    | ProductParameter
    | PayloadParameter
    | CouponCodeParameter
    | ActionParameter
    | LimitedTimeOfferParameter
)

# Which parameter kinds each component takes (component and sub_type in lower case).
_HEADER_KINDS = (
    TextParameter,
    ImageParameter,
    VideoParameter,
    GifParameter,
    DocumentParameter,
    LocationParameter,
    ProductParameter,
)
_BODY_KINDS = (TextParameter, CurrencyParameter, DateTimeParameter)
_BUTTON_KINDS: dict[str, tuple[type, ...]] = {
    "quick_reply": (PayloadParameter,),
    "url": (TextParameter,),
    "copy_code": (CouponCodeParameter,),
    "flow": (ActionParameter,),
    "catalog": (ActionParameter,),
    "mpm": (ActionParameter,),
    "voice_call": (PayloadParameter, TextParameter),
    "order_details": (ActionParameter,),
}

ComponentType = Literal[
    "header",
    "body",
    "button",
    "limited_time_offer",
    "carousel",
    "HEADER",
    "BODY",
    "BUTTON",
    "LIMITED_TIME_OFFER",
    "CAROUSEL",
]
ButtonSubType = Literal[
    "quick_reply",
    "url",
    "copy_code",
    "flow",
    "catalog",
    "mpm",
    "voice_call",
    "order_details",
    "QUICK_REPLY",
    "URL",
    "COPY_CODE",
    "FLOW",
    "CATALOG",
    "MPM",
    "VOICE_CALL",
    "ORDER_DETAILS",
]


class TemplateCard(_Object):
    """A carousel card: its header, body and buttons' parameters."""

    card_index: Annotated[int, Meta(ge=0, le=9)]
    components: Annotated[list[TemplateComponent], Meta(max_length=12)]

    def __post_init__(self) -> None:
        for component in self.components:
            if component.type.lower() == "carousel":
                raise FieldRule("components", "a card cannot hold a carousel")


class TemplateComponent(_Object):
    """A component's parameters. `type` and a button's `sub_type` are accepted in lower or upper
    case, and a button's `index` as a number or a string, as Meta's pages and clients write them.
    A button needs `sub_type` and `index`; a carousel needs `cards`; each component takes its own
    parameter kinds (header: text/media/location/product; body: text/currency/date_time; buttons:
    per sub_type)."""

    type: ComponentType
    sub_type: ButtonSubType | UnsetType = UNSET
    index: ButtonIndex | UnsetType = UNSET
    parameters: Annotated[list[Parameter], Meta(max_length=100)] | UnsetType | None = UNSET
    cards: Annotated[list[TemplateCard], Meta(min_length=1, max_length=10)] | UnsetType = UNSET

    def __post_init__(self) -> None:
        kind = self.type.lower()
        params: list[Parameter] = self.parameters if isinstance(self.parameters, list) else []
        if kind == "button":
            if self.sub_type is UNSET:
                raise FieldRule("sub_type", "a button component needs `sub_type`")
            if self.index is UNSET:
                raise FieldRule("index", "a button component needs `index` (0, 1, ...)")
            allowed = _BUTTON_KINDS[self.sub_type.lower()]
        else:
            for name in ("sub_type", "index"):
                if getattr(self, name) is not UNSET:
                    raise FieldRule(name, f"`{name}` belongs to button components only")
            if kind == "header":
                allowed = _HEADER_KINDS
                if len(params) > 1:
                    raise FieldRule("parameters", "a header takes at most one parameter")
            elif kind == "body":
                allowed = _BODY_KINDS
            elif kind == "limited_time_offer":
                allowed = (LimitedTimeOfferParameter,)
            else:
                allowed = ()
        if kind == "carousel":
            if self.cards is UNSET:
                raise FieldRule("cards", "a carousel component needs `cards`")
            _unique([str(c.card_index) for c in self.cards], "cards", "card indexes")
        elif self.cards is not UNSET:
            raise FieldRule("cards", "`cards` belongs to carousel components only")
        for i, param in enumerate(params):
            if not isinstance(param, allowed):
                tag = type(param).__struct_config__.tag
                raise FieldRule(
                    f"parameters[{i}].type", f"a {kind} component does not take `{tag}` parameters"
                )


class TemplateLanguage(_Object):
    code: Annotated[
        str, Meta(pattern=r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$", description="e.g. en_US, pt_BR, fil.")
    ]
    policy: Literal["deterministic"] | UnsetType = UNSET


class TemplateObject(_Object):
    """`template`: an approved template by name and language, with its parameters."""

    name: Annotated[str, Meta(min_length=1, max_length=512)]
    language: TemplateLanguage
    components: Annotated[list[TemplateComponent], Meta(max_length=20)] | UnsetType | None = UNSET


# --- the envelope -------------------------------------------------------------------------------

MESSAGE_TYPES: tuple[str, ...] = get_args(MessageType)


class Context(_Object):
    """A reply: the quoted message (a wamid, or one of this account's message ids)."""

    message_id: MessageRef


class _Send(_Object):
    """What both send routes share: the message's type and its object under that name."""

    text: TextObject | UnsetType = UNSET
    image: ImageObject | UnsetType = UNSET
    video: VideoObject | UnsetType = UNSET
    audio: AudioObject | UnsetType = UNSET
    document: DocumentObject | UnsetType = UNSET
    sticker: StickerObject | UnsetType = UNSET
    location: LocationObject | UnsetType = UNSET
    contacts: ContactsArray | UnsetType = UNSET
    interactive: InteractiveObject | UnsetType = UNSET
    reaction: ReactionObject | UnsetType = UNSET
    template: TemplateObject | UnsetType = UNSET
    context: Context | UnsetType | None = UNSET
    biz_opaque_callback_data: CallbackData | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        kind: str = self.type  # type: ignore[attr-defined]
        for other in MESSAGE_TYPES:
            if other != kind and getattr(self, other) is not UNSET:
                raise FieldRule(other, f"`{other}` cannot be sent with type {kind}")
        if getattr(self, kind) is UNSET:
            raise FieldRule(kind, f"`{kind}` is required for type {kind}")
        if kind == "reaction" and _given(self.context):
            raise FieldRule("context", "a reaction cannot be sent as a reply")


class V1SendRequest(_Send, kw_only=True):
    """`POST /v1/messages`: Meta's message objects under our envelope. `from` is your phone
    number id; `to` any form Meta accepts (E.164 with or without '+', spaces, dashes,
    parentheses; a national number is read in the country of `from`)."""

    from_: PhoneNumberId = field(name="from")
    to: str
    type: MessageType
    client_reference: ClientReference | UnsetType | None = UNSET
    validity_seconds: ValiditySeconds | UnsetType = UNSET


class MetaSendRequest(_Send, kw_only=True):
    """`POST /{version}/{phone-number-id}/messages`: Meta's request body, unchanged. `type`
    defaults to text, as at Meta."""

    messaging_product: Literal["whatsapp"]
    to: str
    type: MessageType = "text"
    recipient_type: Literal["individual", "group"] | UnsetType = UNSET


# --- calls that are not sends: mark-as-read and typing ----------------------------------------


class TypingIndicator(_Object):
    """Shows "typing…" to the user until the business's next message or 25 s."""

    type: Literal["text"]


class MetaMarkRead(_Object):
    """Meta's mark-as-read on `POST /{version}/{phone-number-id}/messages`: `message_id` is a
    wamid this number received; with `typing_indicator` the user also sees "typing…". Answered
    `{"success": true}`; never billed, never queued."""

    messaging_product: Literal["whatsapp"]
    status: Literal["read"]
    message_id: Annotated[str, Meta(min_length=1, max_length=512)]
    typing_indicator: TypingIndicator | UnsetType = UNSET


class V1MarkRead(_Object):
    """`POST /v1/messages/{wamid}/read`: optionally show the typing indicator too."""

    typing_indicator: bool = False


# --- answers (declared for the OpenAPI document; tests keep the views equal to them) -----------


class _Answer(Struct, forbid_unknown_fields=True):
    pass


class Success(_Answer):
    """Meta's answer to a call that returns nothing else."""

    success: bool


class MediaUploaded(_Answer):
    """Meta's answer to an upload: the media id, usable in a send's `id` for 30 days."""

    id: str


class MetaMediaUrl(_Answer):
    """Meta's `GET /{version}/{media-id}`; `url` is this service's download route, which takes
    the same bearer token (your API key), for 5 minutes at Meta's side."""

    messaging_product: Literal["whatsapp"]
    url: str
    id: str
    mime_type: str | UnsetType = UNSET
    sha256: str | UnsetType = UNSET
    file_size: str | UnsetType = UNSET


class MediaInfoView(_Answer):
    """`GET /v1/media/{id}/info`: an uploaded or received media file; `url` downloads it."""

    id: str
    source: Literal["upload", "inbound"]
    phone_number_id: str
    mime_type: str | None
    sha256: str | None
    file_size: int | None
    url: str


class MediaUploadView(_Answer):
    """`POST /v1/media`'s answer."""

    id: str
    phone_number_id: str
    mime_type: str
    file_size: int
    sha256: Annotated[str, Meta(description="hex sha256 of the bytes as uploaded")]
    uploaded_at: str


class WindowView(_Answer):
    """The 24-hour customer-service window: open while the user's last message is under 24 h
    old; free-form messages need it open, templates do not."""

    open: bool
    expires_at: str | None


class ThreadItem(_Answer):
    """A message of a conversation, in either direction. `content` is Meta's object for the
    type (an inbound message as Meta sent it; an outbound one as it was sent), null once the
    retention period removed it. Media ids of inbound media download at `GET /v1/media/{id}`."""

    direction: Literal["inbound", "echo", "outbound"]
    id: Annotated[
        str,
        Meta(
            description="The wamid of an inbound message, our message id "
            "(msg_…) of an outbound one."
        ),
    ]
    wamid: str | None
    type: str
    at: Annotated[
        str,
        Meta(
            description="When it was written: Meta's timestamp of an inbound "
            "message, the time ingest accepted an outbound one."
        ),
    ]
    phone_number_id: str
    content: Any
    context_message_id: str | None
    media_id: str | None
    status: Annotated[str | None, Meta(description="An outbound message's status.")]
    referral: dict[str, Any] | None
    errors: list[Any] | None


class ConversationView(_Answer):
    """A contact who wrote to one of the account's numbers."""

    wa_id: str
    phone_number_id: str
    contact_name: str | None
    last_message_at: str | None
    last_message: ThreadItem | None
    customer_service_window: WindowView


class ConversationPage(_Answer):
    data: list[ConversationView]
    next_cursor: str | None


class ThreadPage(_Answer):
    data: list[ThreadItem]
    next_cursor: str | None
