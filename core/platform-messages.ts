// The platform → device messages, built as JetLinks' platform sends them (Jackson with
// NON_NULL inclusion): each carries its messageType, an absent value is left out rather than sent
// as null, and an upgrade or a pull reply carries `headers: { async: true }`.
import type { FirmwareOffer, ReadFirmwareMessage, RequestFirmwareReply, UpgradeFirmwareMessage } from './messages.ts';

/** Who a message is for and under which id: the device's reply names the same messageId. */
export interface Addressee {
  messageId: string;
  deviceId: string;
}

/** An offer's fields with the unknown ones left out (a null sign or size is never sent). */
function offerFields(offer: FirmwareOffer): FirmwareOffer {
  const fields: FirmwareOffer = { firmwareId: offer.firmwareId, version: offer.version, url: offer.url, parameters: offer.parameters ?? {} };
  if (offer.sign !== undefined && offer.sign !== null) fields.sign = offer.sign;
  if (offer.signMethod !== undefined && offer.signMethod !== null) fields.signMethod = offer.signMethod;
  if (typeof offer.size === 'number' && Number.isFinite(offer.size)) fields.size = offer.size;
  return fields;
}

/** UpgradeFirmwareMessage: the platform pushes `offer` to a device. */
export function upgradeFirmwareMessage(to: Addressee, offer: FirmwareOffer, timestamp: number): UpgradeFirmwareMessage {
  return { messageType: 'UPGRADE_FIRMWARE', messageId: to.messageId, deviceId: to.deviceId, ...offerFields(offer), timestamp, headers: { async: true } };
}

/** RequestFirmwareMessageReply with the firmware the device asked for. */
export function firmwareFoundReply(to: Addressee, offer: FirmwareOffer, timestamp: number): RequestFirmwareReply {
  return { messageType: 'REQUEST_FIRMWARE_REPLY', messageId: to.messageId, deviceId: to.deviceId, success: true, ...offerFields(offer), timestamp, headers: { async: true } };
}

/** RequestFirmwareMessageReply saying there is nothing to install: `success: false, code: "not_found"`. */
export function firmwareNotFoundReply(to: Addressee, message: string, timestamp: number): RequestFirmwareReply {
  return { messageType: 'REQUEST_FIRMWARE_REPLY', messageId: to.messageId, deviceId: to.deviceId, success: false, code: 'not_found', message, timestamp, headers: { async: true } };
}

/** ReadFirmwareMessage: the platform asks a device for its firmware version and properties. */
export function readFirmwareMessage(to: Addressee, timestamp: number): ReadFirmwareMessage {
  return { messageType: 'READ_FIRMWARE', messageId: to.messageId, deviceId: to.deviceId, timestamp };
}
