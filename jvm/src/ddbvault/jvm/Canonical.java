package ddbvault.jvm;

import com.fasterxml.jackson.databind.JsonNode;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The vault's canonical item text, size and digest share, in the JVM: the same output as the Python codec
 * ({@code ddbvault.codec.to_vault_record} and {@code ddbvault.vault.integrity.item_hash}), byte for byte, for every
 * item that codec accepts. The export's commit runs it over the scan's pages, so items are parsed once, here,
 * instead of in Python workers.
 *
 * <p>Canonical text: compact JSON, non-ASCII as is, map keys and set members sorted by code point, numbers in
 * DynamoDB's plain form, binaries as padded standard base64. Anything the Python codec rejects is rejected
 * here too ({@link Invalid}, naming the attribute path), so a commit never holds text the two disagree on.
 */
public final class Canonical {
    static final int MAX_DEPTH = 32;
    static final int MAX_DIGITS = 38;
    static final int MAX_EXPONENT = 125;
    static final int MIN_EXPONENT = -130;
    static final int HASH_HEX = 15;

    private Canonical() {
    }

    /** An item (or a value) that is not valid DynamoDB JSON. */
    public static final class Invalid extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;
        final String reason;
        final List<Object> steps = new ArrayList<>();  // innermost first: String = name, Integer = list index

        Invalid(String reason) {
            super(reason);
            this.reason = reason;
        }

        Invalid at(Object step) {
            steps.add(step);
            return this;
        }

        /** {@code profile.tags[3]}; a name that is not a plain word as a JSON string in brackets. */
        public String path() {
            StringBuilder out = new StringBuilder();
            for (int i = steps.size() - 1; i >= 0; i--) {
                Object step = steps.get(i);
                if (step instanceof Integer) {
                    out.append('[').append(step).append(']');
                } else if (PLAIN_NAME.matcher((String) step).matches()) {
                    if (out.length() > 0) {
                        out.append('.');
                    }
                    out.append((String) step);
                } else {
                    out.append('[');
                    appendString(out, (String) step);
                    out.append(']');
                }
            }
            return out.toString();
        }

        @Override
        public String getMessage() {
            String path = path();
            return "invalid DynamoDB " + (path.isEmpty() ? "item" : "attribute " + path) + ": " + reason;
        }
    }

    private static final Pattern PLAIN_NAME = Pattern.compile("[^.\\[\\]\"\\s](?:[^.\\[\\]\"]*[^.\\[\\]\"\\s])?");
    private static final Pattern NUMBER = Pattern.compile("([+-]?)([0-9]*)(?:\\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?");

    /** Code point order (Python's str order); String.compareTo compares UTF-16 units, which differs above U+FFFF. */
    static final Comparator<String> CODE_POINT_ORDER = (a, b) -> {
        int n = Math.min(a.length(), b.length());
        for (int i = 0; i < n; i++) {
            char x = a.charAt(i);
            char y = b.charAt(i);
            if (x != y) {
                if (Character.isSurrogate(x) || Character.isSurrogate(y)) {
                    return Integer.compare(a.codePointAt(i), b.codePointAt(i));
                }
                return x - y;
            }
        }
        return a.length() - b.length();
    };

    /** One item's vault row: canonical key strings, text, DynamoDB size and digest share. */
    public static final class Record {
        public final String pk;
        public final String sk;
        public final String text;
        public final long size;
        public final long digest;

        Record(String pk, String sk, String text, long size, long digest) {
            this.pk = pk;
            this.sk = sk;
            this.text = text;
            this.size = size;
            this.digest = digest;
        }
    }

    private static final ThreadLocal<MessageDigest> SHA256 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    });

    /** The first 15 hex digits of the SHA-256 of the text's UTF-8, as a number (integrity.item_hash). */
    public static long digest(String text) {
        byte[] h = SHA256.get().digest(text.getBytes(StandardCharsets.UTF_8));
        long out = 0;
        for (int i = 0; i < 7; i++) {
            out = (out << 8) | (h[i] & 0xFF);
        }
        return (out << 4) | ((h[7] & 0xFF) >>> 4);
    }

    /** The vault row of one item: validates, canonicalises, sizes and hashes in one walk. */
    public static Record record(JsonNode item, String hashKey, String rangeKey) {
        if (item == null || !item.isObject()) {
            throw new Invalid("an item is a mapping of attribute names to values, got "
                    + (item == null ? "nothing" : item.getNodeType().toString().toLowerCase()));
        }
        StringBuilder text = new StringBuilder(1024);
        long size = fields(item, 1, text);
        String pk = keyOf(item, hashKey);
        String sk = rangeKey == null ? null : keyOf(item, rangeKey);
        String canon = text.toString();
        return new Record(pk, sk, canon, size, digest(canon));
    }

    private static String keyOf(JsonNode item, String name) {
        JsonNode value = item.get(name);
        if (value == null) {
            throw new Invalid("key attribute is missing from the item").at(name);
        }
        Map.Entry<String, JsonNode> only = value.fields().next();  // the walk checked: one tag
        String tag = only.getKey();
        if (!tag.equals("S") && !tag.equals("N") && !tag.equals("B")) {
            throw new Invalid("a key is an S, N or B scalar, got " + tag).at(name);
        }
        String val = tag.equals("N") ? number(only.getValue().textValue()) : only.getValue().textValue();
        if (val.isEmpty()) {
            throw new Invalid("empty " + tag + " key value; DynamoDB keys are never empty").at(name);
        }
        return val;
    }

    private static long fields(JsonNode map, int depth, StringBuilder out) {
        String[] keys = new String[map.size()];
        Iterator<String> names = map.fieldNames();
        for (int i = 0; names.hasNext(); i++) {
            keys[i] = names.next();
        }
        Arrays.sort(keys, CODE_POINT_ORDER);
        long size = 0;
        out.append('{');
        for (int i = 0; i < keys.length; i++) {
            String key = keys[i];
            try {
                size += utf8Length(key);
                if (i > 0) {
                    out.append(',');
                }
                appendString(out, key);
                out.append(':');
                size += value(map.get(key), depth, out);
            } catch (Invalid err) {
                throw err.at(key);
            }
        }
        out.append('}');
        return size;
    }

    private static long value(JsonNode v, int depth, StringBuilder out) {
        if (!v.isObject()) {
            throw new Invalid("an attribute value is a mapping like {\"S\": \"x\"}, got " + kind(v));
        }
        if (v.size() != 1) {
            if (v.size() == 0) {
                throw new Invalid("no type tag (empty attribute value)");
            }
            List<String> tags = new ArrayList<>();
            v.fieldNames().forEachRemaining(tags::add);
            tags.sort(CODE_POINT_ORDER);
            throw new Invalid("more than one type tag: " + tags);
        }
        Map.Entry<String, JsonNode> only = v.fields().next();
        String tag = only.getKey();
        JsonNode val = only.getValue();
        out.append("{\"").append(tag).append("\":");
        long size;
        switch (tag) {
            case "S":
                if (!val.isTextual()) {
                    throw new Invalid("S holds " + kind(val) + ", not a string");
                }
                size = utf8Length(val.textValue());
                appendString(out, val.textValue());
                break;
            case "N": {
                String canon = number(val);
                size = numberSize(canon);
                out.append('"').append(canon).append('"');
                break;
            }
            case "M":
                if (!val.isObject()) {
                    throw new Invalid("M holds " + kind(val) + ", not a map");
                }
                if (depth >= MAX_DEPTH) {
                    throw new Invalid("nesting deeper than " + MAX_DEPTH + " levels");
                }
                size = 3 + val.size() + fields(val, depth + 1, out);
                break;
            case "L":
                if (!val.isArray()) {
                    throw new Invalid("L holds " + kind(val) + ", not a list");
                }
                if (depth >= MAX_DEPTH) {
                    throw new Invalid("nesting deeper than " + MAX_DEPTH + " levels");
                }
                size = 3 + val.size();
                out.append('[');
                for (int i = 0; i < val.size(); i++) {
                    if (i > 0) {
                        out.append(',');
                    }
                    try {
                        size += value(val.get(i), depth + 1, out);
                    } catch (Invalid err) {
                        throw err.at(i);
                    }
                }
                out.append(']');
                break;
            case "BOOL":
                if (!val.isBoolean()) {
                    throw new Invalid("BOOL holds " + val + ", not true or false");
                }
                size = 1;
                out.append(val.booleanValue() ? "true" : "false");
                break;
            case "NULL":
                if (!val.isBoolean() || !val.booleanValue()) {
                    throw new Invalid("NULL holds " + val + "; it must be true");
                }
                size = 1;
                out.append("true");
                break;
            case "B": {
                byte[] raw = binary(val);
                size = raw.length;
                out.append('"').append(val.textValue()).append('"');
                break;
            }
            case "SS":
            case "NS":
            case "BS":
                size = set(tag, val, out);
                break;
            default:
                String shown = tag.length() > 20 ? tag.substring(0, 20) : tag;
                throw new Invalid("unknown type tag '" + shown + "' (one of S, N, B, SS, NS, BS, M, L, NULL, BOOL)");
        }
        out.append('}');
        return size;
    }

    private static long set(String tag, JsonNode val, StringBuilder out) {
        if (!val.isArray()) {
            throw new Invalid(tag + " takes a list of members, got " + kind(val));
        }
        if (val.size() == 0) {
            throw new Invalid("empty " + tag + " set; DynamoDB sets hold at least one member");
        }
        String[] members = new String[val.size()];
        long size = 0;
        for (int i = 0; i < members.length; i++) {
            JsonNode m = val.get(i);
            if (tag.equals("SS")) {
                if (!m.isTextual()) {
                    throw new Invalid("SS member " + i + " is " + kind(m) + ", not a string");
                }
                members[i] = m.textValue();
                size += utf8Length(members[i]);
            } else if (tag.equals("NS")) {
                members[i] = number(m);
                size += numberSize(members[i]);
            } else {
                size += binary(m).length;
                members[i] = m.textValue();
            }
        }
        Arrays.sort(members, CODE_POINT_ORDER);
        out.append('[');
        for (int i = 0; i < members.length; i++) {
            if (i > 0) {
                if (members[i].equals(members[i - 1])) {
                    throw new Invalid(tag + " set holds " + members[i] + " twice (after normalisation); "
                            + "set members are unique");
                }
                out.append(',');
            }
            appendString(out, members[i]);
        }
        out.append(']');
        return size;
    }

    private static String kind(JsonNode v) {
        return v.getNodeType().toString().toLowerCase();
    }

    /** The binary's raw bytes; only canonical base64 (standard alphabet, padded, zero trailing bits) passes. */
    private static byte[] binary(JsonNode val) {
        if (!val.isTextual()) {
            throw new Invalid("a binary is bytes or a base64 string, got " + kind(val));
        }
        String text = val.textValue();
        byte[] raw;
        try {
            raw = Base64.getDecoder().decode(text);
        } catch (IllegalArgumentException e) {
            throw new Invalid("bad base64 binary (standard alphabet, padded)");
        }
        if (!Base64.getEncoder().encodeToString(raw).equals(text)) {
            throw new Invalid("non-canonical or bad base64 binary (standard alphabet, padded)");
        }
        return raw;
    }

    private static String number(JsonNode val) {
        if (!val.isTextual()) {
            throw new Invalid("a number travels as a string, got " + kind(val));
        }
        return number(val.textValue());
    }

    /** DynamoDB's one text of a number: plain notation, no exponent, no redundant zeros, "0" for every zero. */
    static String number(String text) {
        Matcher m = NUMBER.matcher(text);
        String shown = text.length() > 60 ? text.substring(0, 60) : text;
        if (!m.matches()) {
            throw new Invalid("not a number: '" + shown + "'");
        }
        String sign = m.group(1);
        String whole = m.group(2);
        String frac = m.group(3) == null ? "" : m.group(3);
        String exp = m.group(4);
        if (whole.isEmpty() && frac.isEmpty()) {
            throw new Invalid("not a number: '" + shown + "'");
        }
        String digits = stripLeading(whole + frac, '0');
        if (digits.isEmpty()) {
            return "0";
        }
        String significant = stripTrailing(digits, '0');
        int n = significant.length();
        if (n > MAX_DIGITS) {
            throw new Invalid(n + " significant digits in '" + shown + "'; DynamoDB keeps at most " + MAX_DIGITS);
        }
        long e10 = 0;
        if (exp != null) {
            String expDigits = stripLeading(exp.startsWith("+") || exp.startsWith("-") ? exp.substring(1) : exp, '0');
            if (expDigits.length() > 9) {
                throw new Invalid("number " + (exp.startsWith("-") ? "underflow" : "overflow") + ": '" + shown + "'");
            }
            e10 = expDigits.isEmpty() ? 0 : Long.parseLong(expDigits) * (exp.startsWith("-") ? -1 : 1);
        }
        long scale = e10 - frac.length() + (digits.length() - n);
        long magnitude = n - 1 + scale;
        if (magnitude > MAX_EXPONENT || magnitude < MIN_EXPONENT) {
            throw new Invalid("number " + (magnitude > 0 ? "overflow" : "underflow") + ": '" + shown + "'");
        }
        String neg = sign.equals("-") ? "-" : "";
        if (scale >= 0) {
            return neg + significant + zeros((int) scale);
        }
        long point = n + scale;
        if (point > 0) {
            return neg + significant.substring(0, (int) point) + "." + significant.substring((int) point);
        }
        return neg + "0." + zeros((int) -point) + significant;
    }

    /** DG "Item sizes and formats": 1 byte per two significant digits, plus 1 (zero counts as one digit). */
    static int numberSize(String canon) {
        String s = canon.startsWith("-") ? canon.substring(1) : canon;
        int n;
        if (s.indexOf('.') >= 0) {
            n = stripLeading(s.replace(".", ""), '0').length();
        } else {
            n = stripTrailing(s, '0').length();
            if (n == 0) {
                n = 1;
            }
        }
        return (n + 1) / 2 + 1;
    }

    private static String stripLeading(String s, char c) {
        int i = 0;
        while (i < s.length() && s.charAt(i) == c) {
            i++;
        }
        return s.substring(i);
    }

    private static String stripTrailing(String s, char c) {
        int i = s.length();
        while (i > 0 && s.charAt(i - 1) == c) {
            i--;
        }
        return s.substring(0, i);
    }

    private static String zeros(int n) {
        char[] z = new char[n];
        Arrays.fill(z, '0');
        return new String(z);
    }

    /** UTF-8 length; a lone surrogate is not Unicode text and is refused, as the Python codec refuses it. */
    static long utf8Length(String s) {
        long n = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                n += 4;
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new Invalid("string holds a lone surrogate, which is not valid Unicode (UTF-8)");
            } else {
                n += 3;
            }
        }
        return n;
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    /** A JSON string as Python's json module writes it with ensure_ascii=False. */
    static void appendString(StringBuilder out, String s) {
        out.append('"');
        int start = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= 0x20 && c != '"' && c != '\\') {
                continue;
            }
            out.append(s, start, i);
            start = i + 1;
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                case '\b': out.append("\\b"); break;
                case '\f': out.append("\\f"); break;
                default:
                    out.append("\\u00").append(HEX[c >> 4]).append(HEX[c & 0xF]);
            }
        }
        out.append(s, start, s.length());
        out.append('"');
    }
}
