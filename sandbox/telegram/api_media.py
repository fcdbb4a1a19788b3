"""sendPhoto, sendDocument, sendVideo, sendAnimation, sendAudio, sendVoice, sendVideoNote,
sendSticker, sendLocation and sendContact.

A file arrives as a multipart upload (in the parameter's own field, or in another field that the
parameter names with ``attach://<field>``) or as the file_id of a file the bot already has.
Uploads are checked and turned into the Bot API objects Telegram would return (photos into a
list of JPEG sizes) and stored, so getFile and the download URL serve them.
"""

from __future__ import annotations

import math
from typing import Any

from . import media
from .api_base import ApiBase, Handler
from .errors import URL_NOT_FETCHED, WRONG_FILE_ID, bad_request
from .params import Params, UploadedFile

# Per-kind parameters that describe the upload (Telegram reads them from the file itself for
# video; the sandbox cannot, so it trusts what the bot says and defaults to 0).
_DETAIL_PARAMS = {
    "photo": (),
    "document": (),
    "video": ("width", "height", "duration"),
    "animation": ("width", "height", "duration"),
    "audio": ("duration", "performer", "title"),
    "voice": ("duration",),
    "video_note": ("duration", "length"),
    "sticker": ("emoji",),
}
_SPOILER_KINDS = frozenset({"photo", "video", "animation"})
_ABOVE_MEDIA_KINDS = frozenset({"photo", "video", "animation"})


class MediaMethods(ApiBase):
    def media_handlers(self) -> dict[str, Handler]:
        def sender(kind: str) -> Handler:
            async def handler(params: Params) -> Any:
                return await self._send_media(params, kind)

            return handler

        return {
            "sendPhoto": sender("photo"),
            "sendDocument": sender("document"),
            "sendVideo": sender("video"),
            "sendAnimation": sender("animation"),
            "sendAudio": sender("audio"),
            "sendVoice": sender("voice"),
            "sendVideoNote": sender("video_note"),
            "sendSticker": sender("sticker"),
            "sendLocation": self.send_location,
            "sendContact": self.send_contact,
        }

    async def _send_media(self, params: Params, kind: str) -> Any:
        target = self._target(params)
        upload, file_id = self._input_file(params, kind)
        content: dict[str, Any] = {}
        if kind in media.CAPTIONED_KINDS:
            content.update(self._caption(params))
            if kind not in _ABOVE_MEDIA_KINDS:
                content.pop("show_caption_above_media", None)
        if kind in _SPOILER_KINDS and params.get_bool("has_spoiler"):
            content["has_media_spoiler"] = True
        reply_to = self._reply_to(params, target.chat)
        markup = self._reply_markup(params)
        self._admit(target)
        try:
            if upload is not None:
                details: dict[str, Any] = {name: params.get_str(name) for name in _DETAIL_PARAMS[kind]}
                details["file_name"] = upload.filename
                details["mime_type"] = media.guess_mime(upload.filename) or _declared_type(upload)
                file_content = self.state.build_media(kind, upload.content, details)
            else:
                assert file_id is not None
                file_content = self.state.reuse_media(kind, file_id)
        except media.MediaError as exc:
            raise bad_request(str(exc)) from None
        return self._store_sent(target, {**file_content, **content}, params, reply_to=reply_to, markup=markup)

    @staticmethod
    def _input_file(params: Params, kind: str) -> tuple[UploadedFile | None, str | None]:
        """The upload or the file_id the call sends; errors worded like the official server's."""
        upload = params.files.get(kind)
        if upload is not None:
            return upload, None
        value = (params.get_str(kind) or "").strip()
        if not value:
            raise bad_request(f"there is no {kind.replace('_', ' ')} in the request")
        if value.startswith("attach://"):
            attached = params.files.get(value[len("attach://") :])
            if attached is None:
                raise bad_request(WRONG_FILE_ID)
            return attached, None
        if value.lower().startswith(("http://", "https://")):
            raise bad_request(URL_NOT_FETCHED)  # the sandbox fetches no URLs
        return None, value

    # ------------------------------------------------------------------ location, contact

    async def send_location(self, params: Params) -> Any:
        target = self._target(params)
        latitude = _coordinate(params, "latitude", 90.0)
        longitude = _coordinate(params, "longitude", 180.0)
        location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
        accuracy = params.get_str("horizontal_accuracy")
        if accuracy:
            value = _float(accuracy, "horizontal_accuracy")
            if not 0 <= value <= 1500:
                raise bad_request("wrong horizontal accuracy specified")
            location["horizontal_accuracy"] = value
        live_period = params.get_int("live_period")
        if live_period:
            if not (60 <= live_period <= 86400 or live_period == 0x7FFFFFFF):
                raise bad_request("wrong live period specified")
            location["live_period"] = live_period
            heading = params.get_int("heading")
            if heading:
                location["heading"] = heading
            radius = params.get_int("proximity_alert_radius")
            if radius:
                location["proximity_alert_radius"] = radius
        reply_to = self._reply_to(params, target.chat)
        markup = self._reply_markup(params)
        self._admit(target)
        return self._store_sent(target, {"location": location}, params, reply_to=reply_to, markup=markup)

    async def send_contact(self, params: Params) -> Any:
        target = self._target(params)
        phone = (params.get_str("phone_number") or "").strip()
        first_name = (params.get_str("first_name") or "").strip()
        if not phone:
            raise bad_request("phone number is empty")
        if not first_name:
            raise bad_request("first name is empty")
        contact: dict[str, Any] = {"phone_number": phone, "first_name": first_name}
        last_name = (params.get_str("last_name") or "").strip()
        if last_name:
            contact["last_name"] = last_name
        vcard = params.get_str("vcard")
        if vcard:
            contact["vcard"] = vcard
        reply_to = self._reply_to(params, target.chat)
        markup = self._reply_markup(params)
        self._admit(target)
        return self._store_sent(target, {"contact": contact}, params, reply_to=reply_to, markup=markup)


def _declared_type(upload: UploadedFile) -> str | None:
    declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
    return declared if declared and declared != "application/octet-stream" else None


def _float(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f'parameter "{name}" must be a number') from None
    if not math.isfinite(value):
        raise bad_request(f'parameter "{name}" must be a number')
    return value


def _coordinate(params: Params, name: str, bound: float) -> float:
    raw = params.get_str(name)
    if raw is None or not raw.strip():
        raise bad_request(f'parameter "{name}" is required')
    value = _float(raw, name)
    if not -bound <= value <= bound:
        raise bad_request("wrong location specified")
    return value
