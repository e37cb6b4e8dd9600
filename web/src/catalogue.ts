// What the store sells. Prices are integers in the currency's minor units, as the API takes them.

export const CURRENCY = "EUR";

export interface Product {
  sku: string;
  name: string;
  unitPriceCents: number;
}

export const CATALOGUE: readonly Product[] = [
  { sku: "BOOK-42", name: "The Guide, paperback", unitPriceCents: 1250 },
  { sku: "MUG-01", name: "Tessera mug", unitPriceCents: 899 },
  { sku: "TEE-M", name: "T-shirt, size M", unitPriceCents: 1999 },
  { sku: "STICKERS-5", name: "Sticker pack of 5", unitPriceCents: 350 },
];

export function productName(sku: string): string {
  return CATALOGUE.find((p) => p.sku === sku)?.name ?? sku;
}

/** An amount in minor units, in the user's locale: 1250 EUR is €12.50, 1250 JPY is ¥1,250. */
export function formatMoney(minorUnits: number, currency: string): string {
  const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(minorUnits / 10 ** digits);
}
